"""The one exception type for raw data problems, so callers can catch them without catching bugs."""


class DataError(RuntimeError):
    """Raw data that is missing, truncated or not in the expected format; the message says how to fix it."""
