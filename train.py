"""Train a blood-cell classifier: python train.py [model=effnet_b6 optim=adam ...] | -m optim=adam,sgd,lion"""
import hydra
from omegaconf import DictConfig

import bloodcell  # noqa: F401  (registers config resolvers)
from bloodcell.cli import user_errors_exit


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
@user_errors_exit
def main(cfg: DictConfig) -> float | None:
    from bloodcell.training import train

    return train(cfg)


if __name__ == "__main__":
    main()
