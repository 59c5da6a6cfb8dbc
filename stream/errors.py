"""Errors a user can act on: printed as one line, never as a traceback."""


class UserError(Exception):
    """A problem with the user's input or machine, with the fix in its message."""

    exit_code = 2


class StreamError(UserError):
    """The source failed mid-run (a dropped camera or stream); what was processed is kept."""

    exit_code = 3


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread by the CLI's handler and handled like Ctrl-C."""


class Invalid(UserError):
    """A value the user gave that can never be right, whatever the run's state (the REST API answers 400)."""


class NameTaken(UserError):
    """A stream name already in the run (the REST API answers 409)."""


class NoSuchStream(UserError):
    """No stream of that name in the run (404)."""


class NotReady(UserError):
    """The run takes no change now: its model is still loading, or it has ended (503)."""
