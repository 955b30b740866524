"""Kedro datasets for AnnData files, model directories and torch checkpoints."""

from scdd.datasets.foundation_model_dataset import FoundationModelDataset
from scdd.datasets.h5ad_dataset import H5ADDataset
from scdd.datasets.torch_checkpoint import TorchCheckpointDataset

__all__ = ["FoundationModelDataset", "H5ADDataset", "TorchCheckpointDataset"]
