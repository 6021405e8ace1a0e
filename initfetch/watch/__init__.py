"""Watch mode, a thin layer on top of the pipeline: the schedule decides what is due
(schedule.py, pure), the lease keeper renews and replaces leases and logins through
the provider interface (keeper.py), the loop refreshes what is due and writes what
changed (loop.py), the notifier tells the application (notify.py), the status file
lets healthcheck judge staleness (status.py), and run.py wires them to signals for
`render --watch` and `exec --watch`."""
