"""User-facing errors: one clear line saying what is wrong, where, and what to do."""
from __future__ import annotations

import difflib
from collections.abc import Iterable


class BloodcellError(Exception):
    """An error caused by user input (config, files, checkpoints). Printed without a traceback."""


class DataError(BloodcellError):
    """A data source is missing, malformed or inconsistent."""


class ConfigError(BloodcellError):
    """A configuration value is invalid."""


class CheckpointError(BloodcellError):
    """A checkpoint or weights file is missing, unsafe or incompatible."""


def suggest(name: str, choices: Iterable[str], n: int = 5) -> str:
    """' Did you mean: a, b?' for the closest names, or '' when none is close."""
    choices = list(choices)
    close = difflib.get_close_matches(name, choices, n=n, cutoff=0.5)
    if not close:
        low = name.lower()
        close = [c for c in choices if low and (low in c.lower() or c.lower() in low)][:n]
    return f" Did you mean: {', '.join(close)}?" if close else ""
