"""The one exception type that reaches the user as a message instead of a traceback."""


class NasctlError(Exception):
    """A user-facing error: printed as one paragraph, exits with status 2."""
