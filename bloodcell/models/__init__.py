"""Models: timm backbones + dense head, the small CNN baseline, weight sources."""
from bloodcell.models.factory import Classifier, DenseHead, build_classifier, check_backbone_name

__all__ = ["Classifier", "DenseHead", "build_classifier", "check_backbone_name"]
