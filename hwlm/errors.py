"""The errors hwlm reports to a user as one line (``prog: error: message``, exit status 2) instead of a traceback.

A user error is something the user can fix from the message: a setting, a file, a folder, the data, the tokenizer.
hwlm raises `UserError` (a `ValueError`, so ``except ValueError`` and ``pytest.raises(ValueError)`` keep working) and
its models raise `hwlm.models.config_checks.InvalidInput` for a bad config value or input (the models travel with
saved folders, so they cannot import this module). Any other exception, a `ValueError` raised inside torch,
transformers or datasets included, is a bug and keeps its traceback.

Standard library only: the commands import it before anything heavy.
"""

from __future__ import annotations

import sys

__all__ = ["UserError", "USER_ERRORS", "user_errors"]


class UserError(ValueError):
    """A problem with what the user gave hwlm, stated with the value and the fix."""


#: What the commands report as one line besides the models' `InvalidInput` (see `user_errors`): hwlm's own errors,
#: and the operating system's answer about a path the user named (a missing file, a folder where a file was expected,
#: no permission).
USER_ERRORS: tuple[type[BaseException], ...] = (
    UserError,
    FileNotFoundError,
    NotADirectoryError,
    IsADirectoryError,
    PermissionError,
)


def user_errors() -> tuple[type[BaseException], ...]:
    """`USER_ERRORS`, and the models' `InvalidInput` once its module is loaded (a model can only have raised it
    then; importing it earlier would import transformers before a command's ``--help``)."""
    checks = sys.modules.get("hwlm.models.config_checks")
    return USER_ERRORS + ((checks.InvalidInput,) if checks is not None else ())
