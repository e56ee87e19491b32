"""One exception type for input a user can fix; the message always says how."""


class NLAConfigError(ValueError):
    """Raised when data, checkpoints or config do not fit together."""


class RunInterrupted(Exception):
    """The user stopped the run (Ctrl-C); the message says what was kept and how to resume."""
