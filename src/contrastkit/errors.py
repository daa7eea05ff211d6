"""The one exception type for bad user input: the CLI prints its message as ``error: ...``."""

from __future__ import annotations


class ContrastkitError(ValueError):
    """Bad input a user can fix (unknown name, missing file, invalid option, existing run).

    A ``ValueError`` so that Python callers can catch it with the usual type; the CLI turns it
    into ``error: <message>`` on stderr and exit status 2, without a traceback.
    """


class ContrastkitWarning(UserWarning):
    """Something a user should know that did not stop the work (a value clamped, a run unfinished).

    The CLI prints its message as ``warning: ...`` on stderr.
    """
