"""Shared wrapper for the entry points: user errors print one clear line, not a traceback."""
from __future__ import annotations

import functools
import sys
from collections.abc import Callable

from bloodcell.errors import BloodcellError


def find_user_error(exc: BaseException | None) -> BloodcellError | None:
    """The BloodcellError behind `exc` (Hydra's instantiate wraps errors raised in constructors)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, BloodcellError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def user_errors_exit(fn: Callable) -> Callable:
    """Run `fn`; a BloodcellError (possibly wrapped) prints `error: ...` on stderr and exits with status 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            user_error = find_user_error(exc)
            if user_error is None:
                raise
            print(f"error: {user_error}", file=sys.stderr)
            sys.exit(2)

    return wrapper
