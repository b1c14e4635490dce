"""Errors a user can act on: the CLI prints them as one line, without a traceback.

Each names the input and the fix. Callers catch the family they can handle.
"""


class FlowtraceError(Exception):
    """Bad input or set-up: the message names the input and the fix."""


class DataError(FlowtraceError):
    """A dataset, its annotations or a video cannot be read as given."""


class ModelError(FlowtraceError):
    """A checkpoint cannot be found, read or matched to an adapter."""


class RecipeError(FlowtraceError):
    """A recipe file or its declaration is wrong."""


class StoreError(FlowtraceError):
    """A result store is missing, damaged, locked by another run, or not flowtrace's."""


class OptionError(FlowtraceError):
    """A run option is out of range or contradicts another; `option` names the parameter."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(f"{option}: {message}")
        self.option, self.detail = option, message

    def __reduce__(self):  # pickled whole: Ray sends a worker's errors back to the driver
        return (type(self), (self.option, self.detail))
