"""OmegaConf resolvers used by conf/ (registered on import of bloodcell)."""
from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("bloodcell_root"):
        OmegaConf.register_new_resolver("bloodcell_root", lambda: str(PROJECT_ROOT))
