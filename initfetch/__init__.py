"""initfetch: fetch secrets into tmpfs config files or a process environment."""

__version__ = "0.1.0"
