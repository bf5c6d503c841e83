"""The kernel side's one error type."""


class ProbeError(Exception):
    """The kernel side could not be set up; the message says why."""
