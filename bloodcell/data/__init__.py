"""Data: sources → table → dedup → split → memory-mapped cache → Dataset → LightningDataModule."""
from bloodcell.data.classes import CLASS_NAMES, canonical_class
from bloodcell.data.datamodule import BloodCellDataModule
from bloodcell.data.sources import BloodMNISTSource, FolderSource, NpzSource

__all__ = ["CLASS_NAMES", "canonical_class", "BloodCellDataModule", "FolderSource", "NpzSource", "BloodMNISTSource"]
