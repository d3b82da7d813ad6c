"""Augmentation: Albumentations pipelines built from YAML op lists (conf/augment/)."""
from bloodcell.augment.builder import JsdViews, build_train_transform, build_transform, jsd_settings
from bloodcell.augment.transforms import AugMix, RandAugment, SmearArtifacts, StainJitter, mix_chains

__all__ = ["AugMix", "JsdViews", "RandAugment", "SmearArtifacts", "StainJitter", "build_train_transform", "build_transform",
           "jsd_settings", "mix_chains"]
