"""User-facing errors: one clear line on stderr and a non-zero exit, raised anywhere in th."""


class UserError(Exception):
    """A problem with the user's input or environment, reported as one line (no traceback).

    ``exit_code`` is what the CLI exits with; 2 is the usage/bad-input code throughout th.
    """

    exit_code: int = 2

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code
