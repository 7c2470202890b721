"""The one error type of the local stack: something the user can fix, printed without a traceback."""


class StackError(Exception):
    """A service could not be installed, started or reached; the message says why and what to do."""
