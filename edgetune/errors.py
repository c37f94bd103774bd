"""The one exception type for mistakes a user can make (bad file, bad field, bad value).

Its message names the file, and the line or field, and says what is wrong in one sentence.
The CLI and TUI print it as one line; anything else is a bug and may show a traceback.
"""


class EdgetuneError(Exception):
    """A user-caused error with a one-line message naming where the problem is."""
