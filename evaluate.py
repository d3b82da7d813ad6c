"""Evaluate checkpoint(s): python evaluate.py ckpt=PATH [data=folder data.root=DIR]"""
import hydra
from omegaconf import DictConfig

import bloodcell  # noqa: F401  (registers config resolvers)
from bloodcell.cli import user_errors_exit


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
@user_errors_exit
def main(cfg: DictConfig) -> None:
    from bloodcell.evaluation.runner import run

    run(cfg)


if __name__ == "__main__":
    main()
