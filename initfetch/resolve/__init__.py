"""Resolving references to values: the resolver (resolver.py) decides what each secret
takes from which read; the scheduler (scheduler.py) runs the reads on a bounded pool,
paced per backend (pacing.py) and retried within one deadline; values.py knows what a
value may be and how `#key` walks into it."""
