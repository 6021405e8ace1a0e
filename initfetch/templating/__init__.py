"""Rendering: outputs in memory from values (render.py), in a bounded Jinja sandbox
(sandbox.py, bounds.py) with the value filters of helpers.py and encoders.py; template
failures worded in messages.py; static checks for `check` in checks.py.

Importing this package loads no template engine: only sandbox.py (and what needs it)
imports Jinja, and a file-only render never does.
"""
