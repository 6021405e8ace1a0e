# Your application's image with initfetch as its ENTRYPOINT wrapper.
# Simplest: start FROM the initfetch image (it has python3 and the initfetch venv).
# For an existing Python 3.11+ image on the same base, you can instead copy the venv:
#   COPY --from=initfetch:local /opt/initfetch /opt/initfetch
ARG INITFETCH_IMAGE=initfetch:local
FROM ${INITFETCH_IMAGE}
COPY app.sh /app/app.sh
COPY initfetch.yaml /etc/initfetch/initfetch.yaml
COPY templates/ /etc/initfetch/templates/
# initfetch resolves, writes to the tmpfs, then execs the command: the app becomes PID 1's
# successor with the secrets in its environment; its exit code is the container's.
ENTRYPOINT ["initfetch", "exec", "--"]
CMD ["/bin/sh", "/app/app.sh"]
