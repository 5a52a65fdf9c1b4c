"""Errors the core raises for bad input.

Every message is one sentence that names what is wrong and how to fix it, so a ComfyUI user sees
something actionable in the red node box and a CLI user sees it as the last line of the trace.
"""


class EasyAnimateError(Exception):
    """Base class: a problem with the user's input or files, not a bug in this code."""


class CheckpointError(EasyAnimateError, ValueError):
    """A weights file or model folder cannot be read, recognised or fitted to a model."""


class InputError(EasyAnimateError, ValueError):
    """A tensor, size, frame count or option the model cannot take."""
