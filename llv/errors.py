"""The error users see as one line (exit status 2), importable by every layer of llv."""


class LlvError(Exception):
    """A problem with the user's input: reported in one line, exit status 2, no traceback."""
