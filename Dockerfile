# initfetch container image.
#
#   docker build -t initfetch:local .                          # every provider (EXTRAS=all)
#   docker build --build-arg EXTRAS=vault -t initfetch:vault .  # only what you use: vault, aws, azure,
#                                                               # a list "vault,aws", or "" for file/env only
#
# Every Python distribution comes from the hash-pinned lock files in requirements/ (`make lock`),
# installed with --require-hashes and wheels only: two builds of one commit install the same bytes.
# The software bill of materials is /opt/initfetch/sbom.cdx.json (CycloneDX JSON).
#
# Works with the legacy builder (DOCKER_BUILDKIT=0) as well as BuildKit: no --mount, no heredocs.
# Behind a TLS-inspecting proxy, build FROM a base whose trust store has your CA and pass only the
# path: --build-arg PIP_CERT=/etc/ssl/certs/ca-certificates.crt. Never pass certificate content,
# tokens or index passwords as build arguments: their values are kept in `docker history`.
# See docs/containers.md.

# The official image, pinned by digest (the multi-platform index of python:3.11-slim-bookworm).
# Any Debian-based image with python3 >= 3.11 and the venv module works, e.g. a distro base.
ARG BASE_IMAGE=python:3.11-slim-bookworm@sha256:a36c24f9cbdf4fd0f52d67f0823eeac19c2028c637cecc392d97f980d4fec56b

# ---- build: a virtual environment in /opt/initfetch; only that directory is kept ----------------
FROM ${BASE_IMAGE} AS build
# A path inside the base image (empty: pip's own CA bundle). Used by pip only, in this stage only.
ARG PIP_CERT=
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PIP_NO_INPUT=1 \
    PYTHONDONTWRITEBYTECODE=1

# Build tools in their own venv, never in the image: the build backend and the SBOM generator.
COPY requirements/build.txt requirements/sbom.txt /src/requirements/
RUN python3 -m venv /build/tools \
    && /build/tools/bin/pip install --require-hashes --only-binary :all: \
       -r /src/requirements/build.txt -r /src/requirements/sbom.txt

# The dependencies of the chosen extras, from their lock files (core.txt for none), into a venv
# without pip; then slimmed (docker/slim.py). This layer is reused until a lock file changes.
ARG EXTRAS=all
COPY requirements/core.txt requirements/vault.txt requirements/aws.txt requirements/azure.txt \
     requirements/all.txt /src/requirements/
COPY docker/slim.py /src/docker/
RUN set -e; set --; IFS=', '; \
    for extra in ${EXTRAS:-core}; do \
        case "$extra" in core|vault|aws|azure|all) ;; \
            *) echo "EXTRAS: unknown extra '$extra' (vault, aws, azure, all)" >&2; exit 2;; esac; \
        set -- "$@" -r "/src/requirements/$extra.txt"; \
    done; unset IFS; \
    python3 -m venv --without-pip /opt/initfetch \
    && /build/tools/bin/pip --python /opt/initfetch/bin/python install --require-hashes \
       --only-binary :all: --no-compile "$@" \
    && rm -f /opt/initfetch/bin/activate* /opt/initfetch/bin/Activate.ps1 \
    && python3 /src/docker/slim.py /opt/initfetch

# The package itself: a wheel built with the locked build backend (the LICENSE goes into its
# dist-info), installed without deps.
COPY pyproject.toml README.m[d] LICENS[E] /src/
COPY initfetch /src/initfetch
RUN /build/tools/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /build/wheels /src \
    && /build/tools/bin/pip --python /opt/initfetch/bin/python install --no-deps --no-compile \
       /build/wheels/initfetch-*.whl \
    && python3 /src/docker/slim.py /opt/initfetch \
    && /opt/initfetch/bin/initfetch --version

# The SBOM from the installed environment, then every mtime set to one instant (commit time).
# Declared here, not above, so a new commit time reuses the dependency layers.
ARG SOURCE_DATE_EPOCH=
RUN /build/tools/bin/cyclonedx-py environment --output-reproducible --sv 1.6 --of JSON \
       -o /opt/initfetch/sbom.cdx.json /opt/initfetch/bin/python \
    && find /opt/initfetch -exec touch --no-dereference --date="@${SOURCE_DATE_EPOCH:-0}" {} +

# ---- final: the base image + the venv; no compilers, no pip, no build context -------------------
FROM ${BASE_IMAGE}
ARG BASE_IMAGE
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="initfetch" \
      org.opencontainers.image.description="Fetch secrets from Vault/OpenBao, AWS and Azure into tmpfs files or a process environment: init container, sidecar or ENTRYPOINT wrapper." \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.base.name="${BASE_IMAGE}" \
      org.opencontainers.image.documentation="docs/containers.md" \
      initfetch.sbom.path="/opt/initfetch/sbom.cdx.json" \
      initfetch.sbom.format="CycloneDX 1.6 JSON"

# The distroless convention: uid/gid 65532 "nonroot". A passwd entry keeps getpwuid() working.
# No world-writable path: the base's /tmp, /var/tmp and /run/lock (1777) lose the write bit for
# others. initfetch writes only to OUT_DIR; an application that needs /tmp gets a tmpfs there.
RUN groupadd --gid 65532 nonroot \
    && useradd --no-log-init --no-create-home --uid 65532 --gid 65532 --home-dir /nonexistent \
       --shell /usr/sbin/nologin nonroot \
    && find / -xdev -perm -o+w ! -type l -exec chmod o-w {} +

# Owned by root, read-only to the runtime user.
COPY --from=build /opt/initfetch /opt/initfetch
ENV PATH=/opt/initfetch/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

USER 65532:65532
WORKDIR /etc/initfetch
ENTRYPOINT ["initfetch"]
CMD ["render"]
