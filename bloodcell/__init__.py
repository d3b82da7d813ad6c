"""bloodcell: Hydra + Lightning framework for shift-robust blood-cell image classifiers."""
import os

# Albumentations checks PyPI for updates at import time; that is slow and fails offline.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from bloodcell.config import register_resolvers  # noqa: E402

register_resolvers()

__version__ = "0.1.0"
