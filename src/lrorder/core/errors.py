"""The one exception type a user can cause: the CLI prints it as one line and exits non-zero."""


class UserError(Exception):
    """Bad input the user can fix (unknown key, impossible value, missing data, busy run dir).

    The message is a single line that says what is wrong and what to do about it.
    """
