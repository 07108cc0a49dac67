"""User-facing errors: the CLI prints these as one line and exits non-zero."""


class GencompareError(Exception):
    """A problem with the user's input or environment, reported without a traceback.

    The CLI prints ``error: <message>`` and exits with status 2 (set
    ``HYDRA_FULL_ERROR=1`` to see the traceback).
    """
