"""Errors meant for the user of the pipeline."""


class BrainshapeError(Exception):
    """A problem with the user's input or configuration.

    The message must name the file, config key, subject or story at fault and say how to
    fix it; the workflow scripts print it as one line instead of a traceback.
    """
