"""A CNN on DeepInsight images (scDeepInsight-like cross-architecture model).

DeepInsight (Sharma et al. 2019; scDeepInsight, Jia et al. 2023) places the
genes on a 2-D grid so that genes with similar profiles across the training
cells are neighbours, then reads each cell as an image. The layout follows
DeepInsight: a t-SNE (or PCA) of the genes, rotated into the minimum-area
bounding rectangle of their convex hull, then binned into pixels. It is
fitted on the training set the CNN learns from, never on test cells. The
t-SNE is openTSNE's on the genes' top principal components (its FFT
gradient from 10k genes): scikit-learn's Barnes-Hut t-SNE of 12k genes
took minutes, and a 32 x 32 grid keeps none of the detail its extra
iterations add (docs/tuning.md, "The CNN's gene layout").
(pyDeepInsight 0.2.3 cannot be used: importing it imports OpenCV and
grad-cam, and grad-cam pulls a CUDA build of torch and torchvision.)

The image map is a fixed first layer of the network (genes averaged into
their pixel, scaled to [0, 1] by the training maximum), so training reads
genes like the other gene-level models.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import openTSNE
import torch
from scipy.spatial import ConvexHull
from sklearn.decomposition import PCA
from torch import nn

from scdd.evaluation.config import DeepInsightCNNParams
from scdd.evaluation.gene_classifier import (
    Matrix,
    check_gene_split,
    dense_rows,
    evaluate_gene_classifier,
    require_in_memory,
)

#: Principal components of the gene profiles that t-SNE reads (the usual 50):
#: its neighbour search on every sampled cell's value took longer than the rest.
TSNE_COMPONENTS = 50
#: openTSNE's steps after its 250 of early exaggeration (its default is 500):
#: the layout is binned into a few dozen pixels a side, which 250 already settle.
TSNE_ITERATIONS = 250


def fit_pixel_layout(
    x: Matrix, params: DeepInsightCNNParams, *, seed: int = 0
) -> np.ndarray:
    """Pixel ``[G, 2]`` (row, column) of every gene, fitted on training cells.

    Args:
        x: ``[n, G]`` training genes (at most ``params.layout_max_cells``
            random cells are read: the genes are the points, the cells their
            coordinates).
        params: ``evaluate.deepinsight_cnn``: the image is ``pixels x
            pixels``; ``layout`` ``"tsne"`` (DeepInsight's default) or
            ``"pca"`` of the genes.
        seed: seed of the cell sample and of t-SNE.
    """
    pixels = params.pixels
    n, n_genes = x.shape
    if n_genes < 3:
        raise ValueError(f"DeepInsight needs at least 3 genes, got {n_genes}")
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, size=min(n, params.layout_max_cells), replace=False))
    cells = dense_rows(x, rows).astype(np.float64)
    if cells.shape[0] < 2:  # a 1-cell set: genes still need 2 coordinates
        cells = np.vstack([cells, np.zeros_like(cells)])
    # Tiny jitter: genes with identical profiles (e.g. all zero in a synthetic
    # set) would otherwise collapse to one point and break the convex hull.
    cells = cells + rng.normal(scale=1e-6, size=cells.shape)
    genes = cells.T
    if params.layout == "tsne":
        points = _tsne(genes, seed)
    else:
        points = PCA(n_components=2, random_state=seed).fit_transform(genes)
    points = _rotate_to_bounding_rectangle(points)
    low, high = points.min(axis=0), points.max(axis=0)
    scaled = (points - low) / np.where(high > low, high - low, 1.0) * pixels
    return np.clip(np.floor(scaled), 0, pixels - 1).astype(np.int64)


def _tsne(genes: np.ndarray, seed: int) -> np.ndarray:
    """2-D t-SNE of ``genes [G, cells]`` by openTSNE on their top
    ``TSNE_COMPONENTS`` principal components, ``TSNE_ITERATIONS`` steps after
    early exaggeration, on the run's threads."""
    components = min(TSNE_COMPONENTS, *genes.shape)
    if components < genes.shape[1]:
        genes = PCA(n_components=components, random_state=seed).fit_transform(genes)
    return np.asarray(
        openTSNE.TSNE(
            n_components=2,
            perplexity=min(30.0, (genes.shape[0] - 1) / 3),
            n_iter=TSNE_ITERATIONS,
            initialization="pca",
            negative_gradient_method="auto",  # Barnes-Hut below 10k genes, FFT above
            random_state=seed,
            n_jobs=torch.get_num_threads(),
        ).fit(genes)
    )


def _rotate_to_bounding_rectangle(points: np.ndarray) -> np.ndarray:
    """``points [G, 2]`` rotated so their minimum-area bounding rectangle is
    axis-aligned (one rectangle side lies on a convex hull edge)."""
    hull = points[ConvexHull(points).vertices]
    edges = np.roll(hull, -1, axis=0) - hull
    angles = np.unique(np.mod(np.arctan2(edges[:, 1], edges[:, 0]), np.pi / 2))
    cos, sin = np.cos(angles), np.sin(angles)
    rotations = np.stack([np.stack([cos, sin], 1), np.stack([-sin, cos], 1)], 1)
    rotated = np.einsum("aij,hj->ahi", rotations, hull)  # [angles, hull, 2]
    extent = rotated.max(axis=1) - rotated.min(axis=1)
    best = rotations[np.argmin(extent.prod(axis=1))]
    return points @ best.T


class GeneImage(nn.Module):
    """Fixed map ``[b, G]`` genes -> ``[b, 1, H, W]`` images in [0, 1].

    Each pixel holds the mean of its genes (0 where no gene lands), divided
    by ``scale`` (the training set's largest value) and clipped to [0, 1],
    DeepInsight's norm-2 on already log-normalised data.
    """

    def __init__(self, coords: np.ndarray, pixels: int, scale: float) -> None:
        super().__init__()
        index = torch.from_numpy(coords[:, 0] * pixels + coords[:, 1]).long()
        counts = torch.bincount(index, minlength=pixels * pixels).float()
        self.pixels = pixels
        self.register_buffer("index", index)
        self.register_buffer("inverse_count", 1.0 / counts.clamp(min=1.0))
        self.scale = float(scale) if scale > 0 else 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        image = x.new_zeros(x.shape[0], self.pixels * self.pixels)
        image.index_add_(1, self.index, x)
        image = (image * self.inverse_count / self.scale).clamp(0.0, 1.0)
        image = image.view(-1, 1, self.pixels, self.pixels)
        return image.contiguous(memory_format=torch.channels_last)


def build_deepinsight_cnn(
    coords: np.ndarray, pixels: int, scale: float, num_classes: int, width: int
) -> nn.Module:
    """GeneImage, two conv-BN-ReLU-maxpool blocks, then a linear layer on the
    flattened maps: a pixel is a gene, so where it lies must reach the
    classifier (global pooling would discard it).

    ReLU runs after the pooling (the same function: max and ReLU commute, on
    a quarter of the values) and the network is channels-last: together 25%
    faster per CPU training step, where the pointwise layers dominate."""

    def block(c_in: int, c_out: int) -> list[nn.Module]:
        return [
            nn.Conv2d(c_in, c_out, 3, padding=1),
            nn.BatchNorm2d(c_out),
            nn.MaxPool2d(2),
            nn.ReLU(),
        ]

    return nn.Sequential(
        GeneImage(coords, pixels, scale),
        *block(1, width),
        *block(width, 2 * width),
        nn.Flatten(),
        nn.Linear(2 * width * (pixels // 4) ** 2, num_classes),
    ).to(memory_format=torch.channels_last)


def evaluate_deepinsight_cnn(  # noqa: PLR0913
    train_x: Matrix,
    train_labels: np.ndarray,
    test_x: Matrix,
    test_labels: np.ndarray,
    *,
    num_classes: int,
    params: DeepInsightCNNParams,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> dict:
    """Fit the gene layout on the training set, then train and score the CNN
    (``params.width`` channels in its first block).

    ``params``' training settings, the other arguments and the result are
    those of :func:`scdd.evaluation.gene_classifier.evaluate_gene_classifier`.
    """
    require_in_memory(train_x, "DeepInsight CNN")
    check_gene_split(train_x, train_labels, num_classes, "train_x")
    coords = fit_pixel_layout(train_x, params, seed=seed)
    scale = float(train_x.max())
    return evaluate_gene_classifier(
        partial(
            build_deepinsight_cnn,
            coords,
            params.pixels,
            scale,
            num_classes,
            params.width,
        ),
        train_x,
        train_labels,
        test_x,
        test_labels,
        num_classes=num_classes,
        params=params,
        seed=seed,
        device=device,
        progress=progress,
        name="DeepInsight CNN",
    )
