"""scDD: latent-code dataset distillation of labelled scRNA-seq data."""

__version__ = "0.1.0"
