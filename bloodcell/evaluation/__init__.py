"""Evaluation: predictions → metrics (torchmetrics) → metrics.json, report, pictures."""
from bloodcell.evaluation.metrics import classification_metrics, metrics_from_confusion

__all__ = ["classification_metrics", "metrics_from_confusion"]
