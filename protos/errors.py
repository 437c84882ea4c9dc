"""The one error the wire package raises: a value or setting the wire cannot carry."""


class WireError(ValueError):
    """Out of range, malformed, or a missing certificate: the message names the value, its limit
    and the fix. The hub answers it as INVALID_ARGUMENT; the CLIs print it as one line."""
