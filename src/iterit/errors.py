"""The one exception users see: a problem with their input or settings, told in one line."""

from __future__ import annotations

from collections.abc import Sequence


class IterITError(ValueError):
    """A user error: bad input, a bad setting, or a missing optional dependency.

    The message is one line naming what was given (file:line, flag, value), what is allowed and the fix.
    The CLI prints it and exits with status 2; ``--verbose`` adds the traceback.
    """


def missing_extra(package: str, extra: str) -> IterITError:
    """The error for an optional dependency that is not installed, naming the extra that brings it."""
    return IterITError(f"this needs the optional package '{package}': pip install 'iterit[{extra}]'")


def check_choice(flag: str, value: str, allowed: Sequence[str]) -> None:
    """Raise the error for a setting ``flag`` (a parameter name) whose ``value`` is not one of ``allowed``."""
    if value not in allowed:
        raise IterITError(f"--{flag.replace('_', '-')}: '{value}' is not one of {', '.join(allowed)}")
