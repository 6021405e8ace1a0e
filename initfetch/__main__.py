from initfetch.cli import run

run()
