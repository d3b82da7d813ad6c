"""On-device batch augmentation (`batch_augment=`): vectorised ops with per-image random parameters, no host syncs.

`core` holds the machinery (per-image draws, `BatchOp`, `BatchAugment`, the YAML builder); the ops live
in `geometric`, `colour`, `degrade`, `occlude` and `levels` and are re-exported here, so configs name
them `bloodcell.augment.gpu.<Op>` (conf/batch_augment/basic.yaml, pipeline.yaml).
"""
from bloodcell.augment.gpu.colour import ColorJitter, HueSaturationValue, Illumination, PlanckianJitter, RandomGamma, StainJitter, ToGray
from bloodcell.augment.gpu.core import BatchAugment, BatchOp, PerImage, batch_op_list, build_batch_augment
from bloodcell.augment.gpu.degrade import Blur, GaussNoise, JpegLike
from bloodcell.augment.gpu.geometric import Pixelate, RandomAffine, RandomFlip, RandomRot90
from bloodcell.augment.gpu.levels import AugMix, RandAugment
from bloodcell.augment.gpu.occlude import CoarseDropout, SmearArtifacts

__all__ = ["AugMix", "BatchAugment", "BatchOp", "Blur", "CoarseDropout", "ColorJitter", "GaussNoise", "HueSaturationValue", "Illumination",
           "JpegLike", "PerImage", "Pixelate", "PlanckianJitter", "RandAugment", "RandomAffine", "RandomFlip", "RandomGamma", "RandomRot90",
           "SmearArtifacts", "StainJitter", "ToGray", "batch_op_list", "build_batch_augment"]
