"""The one exception type for user errors.

Anything the user can fix (a missing file, an unknown task, a bad setting) raises `MptuneError`
with one sentence naming the problem. The CLI prints it as a single line and exits with status 2;
any other exception is a bug and keeps its traceback.
"""


class MptuneError(Exception):
    """A problem with the user's input: files, task names, labels, settings or shapes."""
