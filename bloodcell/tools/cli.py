"""The one style of every entry point: user errors print one clear line (exit status 2), not a traceback."""
from __future__ import annotations

import functools
import sys
from collections.abc import Callable

from bloodcell.config import CONF_DIR
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


def hydra_tool(config_name: str) -> Callable[[Callable], Callable]:
    """A Hydra app on conf/<config_name>.yaml (overrides, -m, --help, run folders) with one-line user errors."""
    import hydra

    def decorate(fn: Callable) -> Callable:
        return hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name=config_name)(user_errors_exit(fn))

    return decorate


argparse_tool = user_errors_exit  # argparse tools: `main(argv=None)`, same error handling
