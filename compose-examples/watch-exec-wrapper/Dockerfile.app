# Your application's image with `initfetch exec --watch` as its ENTRYPOINT wrapper:
# initfetch stays as the parent, supervises the app and keeps its secrets current.
ARG INITFETCH_IMAGE=initfetch:local
FROM ${INITFETCH_IMAGE}
COPY app.sh /app/app.sh
COPY initfetch.yaml /etc/initfetch/initfetch.yaml
COPY templates/ /etc/initfetch/templates/
# SIGTERM (docker stop) is forwarded to the app, which gets on_change.grace to exit
# before SIGKILL; the container's exit code is the app's.
ENTRYPOINT ["initfetch", "exec", "--watch", "--"]
CMD ["/bin/sh", "/app/app.sh"]
