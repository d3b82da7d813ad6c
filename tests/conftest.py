"""Shared fixtures: compose the real config (hydra.compose) with outputs and caches in tmp dirs."""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import pytest  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from bloodcell.config import compose  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"
SAMPLE = ROOT / "data" / "sample"
PBC128 = Path(os.environ.get("BLOODCELL_PBC128", ROOT.parent / "shared" / "data" / "pbc128"))

# Quiet, fast defaults for tests: no rich bar, no workers, CPU.
FAST = [
    "~callbacks.progress_bar",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "trainer.accelerator=cpu",
    "data.num_workers=0",
]


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One decoded-image cache for the whole session (building it is the slow part)."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def compose_cfg(tmp_path, cache_dir) -> Callable[..., DictConfig]:
    """compose_cfg([...overrides], config_name="train") → the real composed config, outputs in tmp_path."""

    def make(overrides: Sequence[str] = (), config_name: str = "train") -> DictConfig:
        base = [f"paths.output_dir={tmp_path / 'out'}", f"paths.cache_dir={cache_dir}"]
        return compose(config_name, [*base, *overrides])

    return make


@pytest.fixture
def pbc128() -> Path:
    if not PBC128.is_dir():
        pytest.skip(f"{PBC128} not present")
    return PBC128
