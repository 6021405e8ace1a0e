# What the application container sees, as `KEY value` lines (tests/docker/conftest.py:parse_report).
# Run by `sh -c` inside the app container; OUT is the directory initfetch rendered into.
set -u
OUT=${OUT:-/run/fetched}
echo "UID $(id -u):$(id -g)"
grep " $OUT " /proc/mounts | sed 's/^/MOUNT /'
for f in "$OUT"/* "$OUT"/.[!.]*; do
    [ -e "$f" ] || continue
    echo "STAT $(stat -c '%n %a %u %g' "$f")"
    echo "CONTENT $(basename "$f") $(base64 -w0 < "$f")"
done
echo "COUNT $(ls -A "$OUT" | wc -l)"
echo "ENVNAMES $(env | cut -d= -f1 | sort | tr '\n' ' ')"
echo "ENVDUMP $(env | base64 -w0)"
echo "SECRETS $(ls -A /run/secrets 2>/dev/null | tr '\n' ' ')"
