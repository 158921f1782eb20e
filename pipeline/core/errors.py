"""The one exception type that stages turn into a clean message and a non-zero exit."""


class PipelineError(Exception):
    """A failure the user can act on: the message says what went wrong and what to do.

    Stage entry points catch it, print the message on one line and exit with ``exit_code``,
    so no traceback reaches the user for bad input.
    """

    exit_code = 1


class ParamsError(PipelineError):
    """params.yaml (or a ``--set`` override) failed validation."""

    exit_code = 2


class UsageError(PipelineError):
    """A command-line option names the wrong kind of thing (a folder for a file, ...)."""

    exit_code = 2
