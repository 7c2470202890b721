"""Source errors: a misconfiguration fails fast with the setting and the fix; a fault is retried."""


class SourceConfigError(Exception):
    """The source cannot work as configured (wrong password, wal_level, missing table...).

    Not retried: the message names the problem and the fix, and reaches logs, /readyz and status.
    """


class SourceUnavailable(Exception):
    """A connection fault (server restarting, network); retried with backoff."""
