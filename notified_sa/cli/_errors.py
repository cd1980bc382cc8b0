"""Exit codes and :class:`CLIError`, the one exception a command raises to stop with a message."""

from __future__ import annotations

__all__ = ["EXIT_FAILURE", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "CLIError"]

#: The command did what it was asked.
EXIT_OK = 0
#: A runtime failure: cannot connect, a missing table, a failed import, a server that stopped with an error.
EXIT_FAILURE = 1
#: A usage error: bad arguments or environment variables, a target that is not a Server.
EXIT_USAGE = 2
#: Interrupted by Ctrl-C outside ``serve`` (which stops cleanly and exits 0).
EXIT_INTERRUPTED = 130


class CLIError(Exception):
    """A failure the command reports as one message, with its exit code (1 runtime, 2 usage)."""

    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.code = code
