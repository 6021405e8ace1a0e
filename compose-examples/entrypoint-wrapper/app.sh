#!/bin/sh
# Stand-in for your application: it reads its config from the tmpfs and its
# secrets from the environment that `initfetch exec` handed it.
set -eu
echo "app: started as uid $(id -u)"
test -r /run/initfetch/database.json
echo "app: config present; DB_USER=${DB_USER}; DB_PASSWORD is ${#DB_PASSWORD} characters"
exec sleep 2147483647
