"""DDP launch checks: catch the Hydra multirun + Lightning-launched DDP combination before it hangs.

Lightning's DDP strategy (when no launcher such as torchrun or SLURM started the ranks) re-runs
`sys.argv` once per extra device. Under `-m` that argv is the whole sweep, so every rank would
start its own sweep and the process groups never match. Safe: one Hydra run per process group,
launched by torchrun/srun (or a SLURM launcher such as hydra-submitit, one srun per job).
"""
from __future__ import annotations

import os
from typing import Any

from bloodcell.errors import ConfigError

EXTERNAL_LAUNCH_VARS = ("TORCHELASTIC_RUN_ID", "LOCAL_RANK")  # torchrun / a rank already started


def launched_externally(env: dict[str, str] | None = None) -> bool:
    """True when torchrun or SLURM (several tasks) created the ranks, so Lightning spawns nothing."""
    env = dict(os.environ if env is None else env)
    if any(v in env for v in EXTERNAL_LAUNCH_VARS):
        return True
    return int(env.get("SLURM_NTASKS", "1") or 1) > 1


def lightning_relaunches(trainer_cfg: Any) -> bool:
    """Whether this trainer config makes Lightning re-execute the script (DDP, not spawn, >1 process)."""
    strategy = trainer_cfg.get("strategy", "auto")
    name = str(strategy.get("_target_", "") if hasattr(strategy, "get") else strategy).lower()
    if "ddp" not in name or "spawn" in name or "fork" in name or "notebook" in name:
        return False
    devices, nodes = trainer_cfg.get("devices", 1), int(trainer_cfg.get("num_nodes", 1) or 1)
    many = nodes > 1 or str(devices) in ("auto", "-1") or (isinstance(devices, (list, tuple)) and len(devices) > 1)
    if not many:
        try:
            many = int(devices) > 1
        except (TypeError, ValueError):
            many = "," in str(devices)
    return many


def check_ddp_launch(trainer_cfg: Any, multirun: bool, env: dict[str, str] | None = None) -> None:
    """Refuse `-m` sweeps whose jobs would let Lightning re-launch DDP ranks (each would re-run the sweep)."""
    if multirun and lightning_relaunches(trainer_cfg) and not launched_externally(env):
        raise ConfigError(
            "multirun (-m) with trainer.strategy=ddp would re-launch the whole sweep on every rank. Run one job per "
            "process group instead: torchrun --nproc_per_node=N train.py trainer=ddp ... (a loop over settings), "
            "srun under SLURM / hydra/launcher=submitit_slurm with tasks_per_node=N, or trainer.strategy=ddp_spawn."
        )


def hydra_multirun() -> bool:
    """True inside a `-m` job (False outside Hydra, e.g. tests composing the config directly)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
