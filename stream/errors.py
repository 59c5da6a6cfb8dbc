"""Errors a user can act on: printed as one line, never as a traceback."""


class UserError(Exception):
    """A problem with the user's input or machine, with the fix in its message."""

    exit_code = 2


class StreamError(UserError):
    """The source failed mid-run (a dropped camera or stream); what was processed is kept."""

    exit_code = 3


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread by the CLI's handler and handled like Ctrl-C."""
