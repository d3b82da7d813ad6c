"""Augmentation: Albumentations pipelines built from YAML op lists (conf/augment/)."""
from bloodcell.augment.builder import build_transform

__all__ = ["build_transform"]
