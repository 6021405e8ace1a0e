# initfetch container image.
#
#   docker build -t initfetch:local .                          # every provider (EXTRAS=all)
#   docker build --build-arg EXTRAS=vault -t initfetch:vault .  # only what you use: vault, aws, azure,
#                                                               # a list "vault,aws", or "" for file/env only
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
ARG EXTRAS=all
# A path inside the base image (empty: pip's own CA bundle). Used by pip only, in this stage only.
ARG PIP_CERT=
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# Dependencies first, from pyproject.toml alone (with a stub package), so this layer is reused
# until the dependencies change, not on every source edit.
COPY pyproject.toml README.m[d] /src/
RUN mkdir -p /src/initfetch \
    && echo '__version__ = "0"' > /src/initfetch/__init__.py \
    && python3 -m venv /opt/initfetch \
    && /opt/initfetch/bin/pip install --no-cache-dir "/src${EXTRAS:+[$EXTRAS]}" \
    && /opt/initfetch/bin/pip uninstall --yes initfetch \
    && rm -rf /src/initfetch /src/build /src/*.egg-info

COPY initfetch /src/initfetch
# The package itself, then drop pip/setuptools: the final image never installs anything.
RUN /opt/initfetch/bin/pip install --no-cache-dir --no-deps /src \
    && /opt/initfetch/bin/initfetch --version \
    && /opt/initfetch/bin/pip uninstall --yes pip setuptools \
    && rm -f /opt/initfetch/bin/activate* /opt/initfetch/bin/Activate.ps1

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
      org.opencontainers.image.documentation="docs/containers.md"

# The distroless convention: uid/gid 65532 "nonroot". A passwd entry keeps getpwuid() working.
RUN groupadd --gid 65532 nonroot \
    && useradd --no-log-init --no-create-home --uid 65532 --gid 65532 --home-dir /nonexistent \
       --shell /usr/sbin/nologin nonroot

# Owned by root, read-only to the runtime user.
COPY --from=build /opt/initfetch /opt/initfetch
ENV PATH=/opt/initfetch/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

USER 65532:65532
WORKDIR /etc/initfetch
ENTRYPOINT ["initfetch"]
CMD ["render"]
