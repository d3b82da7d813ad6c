"""Build the benchmark sets of one split: python -m bloodcell.tools.benchmark_sets data=pbc128 out=bench/pbc128 [seed=0 bmk=strong]

Or `ckpt=PATH` instead of `data=...`: that checkpoint's own data and split. See bloodcell/evaluation/benchmark_sets.py.
"""
from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from bloodcell.tools.cli import hydra_tool


@hydra_tool("benchmark_sets")
def main(cfg: DictConfig) -> dict:
    """clean.npz, bmk.npz, corruptions/*.npz and manifest.json in `out`, reproducible from `seed`."""
    from bloodcell.evaluation.benchmark_sets import BenchmarkSpec, build_benchmark_sets, source_data_cfg

    data_cfg = source_data_cfg(cfg.get("data"), cfg.get("ckpt"))
    out = None if OmegaConf.is_missing(cfg, "out") else cfg.out
    return build_benchmark_sets(data_cfg, out, BenchmarkSpec.from_cfg(cfg))


if __name__ == "__main__":
    main()
