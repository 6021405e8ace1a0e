"""OUT_DIR, owned in one place: the names initfetch gives its own files (names.py),
what must hold before anything is written (target.py), the one atomic writer
(writer.py), the completion marker (marker.py), reading health and staleness
(health.py) and wiping (wipe.py)."""
