"""Kedro datasets for AnnData files, model directories and torch checkpoints."""

from scdd.datasets.h5ad_dataset import H5ADDataset

__all__ = ["H5ADDataset"]
