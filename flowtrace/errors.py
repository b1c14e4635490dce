"""Errors a user can act on: the CLI prints them as one line, without a traceback."""


class FlowtraceError(Exception):
    """Bad input or set-up: the message names the input and the fix."""
