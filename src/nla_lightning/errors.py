"""One exception type for input a user can fix; the message always says how."""


class NLAConfigError(ValueError):
    """Raised when data, checkpoints or config do not fit together."""
