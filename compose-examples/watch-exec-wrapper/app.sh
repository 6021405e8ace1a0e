#!/bin/sh
# Stand-in for your application: reads its config from the tmpfs, its password from the
# environment, and reloads its files on SIGHUP. It prints checksums, never values.
set -eu
sum() { sha256sum "$1" | cut -c1-64; }
reload() { echo "app: reloaded api_key sha256=$(sum /run/initfetch/api_key)"; }
trap reload HUP
trap 'echo "app: stopping"; exit 0' TERM
pw=$(printf %s "$DB_PASSWORD" | sha256sum | cut -c1-64)
echo "app: started as uid $(id -u); DB_PASSWORD sha256=$pw; api_key sha256=$(sum /run/initfetch/api_key)"
while true; do
  sleep 1 &
  wait $! || true
done
