"""The one exception type that means "the user's input is wrong", shown as one line, exit code 2."""


class CnnlabError(Exception):
    """A problem the user can fix: printed as ``cnnlab: error: <message>`` with no traceback.

    The message names the file or option at fault and what to do about it.
    """
