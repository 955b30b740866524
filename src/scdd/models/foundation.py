"""The foundation model F: SCimilarity's encoder/decoder, trained or loaded.

A model lives in a directory laid out as SCimilarity publishes its weights
(``encoder.ckpt``, ``decoder.ckpt``, ``layer_sizes.json``, ``gene_order.tsv``,
``label_ints.csv``, ``hyperparameters.json``), so
``scimilarity.CellEmbedding(model_path)`` reads a model trained here
unchanged, and a published SCimilarity model can be used in its place.
"""

from __future__ import annotations

import copy
import json
import logging
import pickle
import threading
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import anndata as ad
import dask
import dask.array as da
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from distributed import Client, as_completed
from pydantic import Field
from scimilarity.nn_models import Decoder, Encoder
from scipy import sparse
from tqdm import tqdm

from scdd.cellstore import is_lazy, lazy_matrix, map_csr_blocks
from scdd.dask_engine import (
    compute,
    distributed_client,
    in_worker_task,
    pin_task_thread,
    worker_failures_explained,
)
from scdd.models.device import resolve_device
from scdd.models.dropout import with_uniform_dropout
from scdd.param_group import ParamGroup, PositiveInt, Rate

logger = logging.getLogger(__name__)

MODEL_FILES = (
    "encoder.ckpt",
    "decoder.ckpt",
    "layer_sizes.json",
    "gene_order.tsv",
    "label_ints.csv",
    "hyperparameters.json",
)

#: Rows of a block E embeds at once (``foundation.embed.chunk_size``).
EMBED_CHUNK_SIZE = 4096

#: Fewest genes data must share with F's gene order
#: (``foundation.min_gene_overlap``).
MIN_GENE_OVERLAP = 500


class FoundationArchitectureParams(ParamGroup):
    """``foundation.model``: SCimilarity's encoder/decoder sizes."""

    latent_dim: PositiveInt = 128
    hidden_dim: list[PositiveInt] = Field(default=[1024, 1024], min_length=1)
    dropout: Rate = 0.5
    input_dropout: Rate = 0.4


class FoundationEmbedParams(ParamGroup):
    """``foundation.embed``."""

    chunk_size: PositiveInt = EMBED_CHUNK_SIZE


@dataclass
class FoundationModel:
    """Encoder E, decoder D and the gene space they read and write.

    Attributes:
        encoder: genes ``[N, G]`` (log-normalised, ``gene_order``) to unit-norm
            latents ``[N, latent_dim]``.
        decoder: latents ``[N, latent_dim]`` to genes ``[N, G]``.
        gene_order: the ``G`` gene names, in input order.
        label_ints: class names, index = integer label (SCimilarity's
            ``label_ints.csv``).
        hyperparameters: architecture and training settings.
        min_gene_overlap: fewest genes data must share with ``gene_order``
            to be read by this model (stored with it).
    """

    encoder: Encoder
    decoder: Decoder
    gene_order: list[str]
    label_ints: list[str] = field(default_factory=list)
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    min_gene_overlap: int = MIN_GENE_OVERLAP

    @property
    def latent_dim(self) -> int:
        return int(self.encoder.latent_dim)

    def check_genes(self, var_names: Sequence[str]) -> np.ndarray:
        """Where ``var_names`` sit in F's gene order; raises when fewer than
        :attr:`min_gene_overlap` are shared (see :func:`gene_positions`)."""
        return gene_positions(
            var_names, gene_order=self.gene_order, min_overlap=self.min_gene_overlap
        )

    def align(self, adata: ad.AnnData) -> ad.AnnData:
        """``adata`` in F's gene order (see :func:`align_genes`)."""
        return align_genes(
            adata, gene_order=self.gene_order, min_overlap=self.min_gene_overlap
        )

    def freeze(self) -> FoundationModel:
        """Put E and D in eval mode (BatchNorm, Dropout) with no parameter grads."""
        for module in (self.encoder, self.decoder):
            module.eval().requires_grad_(False)
        return self


def build_autoencoder(
    n_genes: int, architecture: FoundationArchitectureParams | None = None
) -> tuple[Encoder, Decoder]:
    """SCimilarity's encoder and its mirror-image decoder, of ``architecture``
    (default: :class:`FoundationArchitectureParams`' defaults), their dropout
    drawn by :class:`UniformDropout` (the same layers and weights)."""
    arch = architecture or FoundationArchitectureParams()
    hidden = [int(h) for h in arch.hidden_dim]
    encoder = Encoder(
        n_genes,
        latent_dim=arch.latent_dim,
        hidden_dim=hidden,
        dropout=arch.dropout,
        input_dropout=arch.input_dropout,
    )
    decoder = Decoder(
        n_genes,
        latent_dim=arch.latent_dim,
        hidden_dim=hidden[::-1],
        dropout=arch.dropout,
    )
    return with_uniform_dropout(encoder), with_uniform_dropout(decoder)


def save_model_dir(model: FoundationModel, path: Path) -> None:
    """Write ``model`` into the (existing, empty) directory ``path``."""
    torch.save({"state_dict": model.encoder.state_dict()}, path / "encoder.ckpt")
    torch.save({"state_dict": model.decoder.state_dict()}, path / "decoder.ckpt")
    sizes = {k: list(v.shape) for k, v in model.encoder.state_dict().items()}
    (path / "layer_sizes.json").write_text(json.dumps(sizes, indent=1))
    (path / "gene_order.tsv").write_text("\n".join(model.gene_order) + "\n")
    pd.DataFrame({"0": model.label_ints}).to_csv(path / "label_ints.csv")
    hyper = {**model.hyperparameters, "min_gene_overlap": model.min_gene_overlap}
    (path / "hyperparameters.json").write_text(json.dumps(hyper, indent=2, default=str))


def _load_state(path: Path) -> dict[str, torch.Tensor]:
    """Read ``{"state_dict": ...}`` with ``weights_only=True`` (no pickled code)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
        raise ValueError(
            f"Refusing to load '{path}': it is not a plain tensor checkpoint "
            f"(torch.load(weights_only=True) failed: {str(exc).splitlines()[0]}). "
            "Only load model files you trust, saved as {'state_dict': ...}."
        ) from exc
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ValueError(f"'{path}' holds no 'state_dict' entry.")
    return ckpt["state_dict"]


def _hidden_dims(layer_sizes: dict[str, list[int]]) -> tuple[list[int], int]:
    """Hidden sizes and latent size from ``layer_sizes.json`` (as SCimilarity does)."""
    weights = [
        layer_sizes[k]
        for k in sorted(layer_sizes)
        if "weight" in k and len(layer_sizes[k]) > 1
    ]
    return [w[0] for w in weights[:-1]], weights[-1][0]


def load_model_dir(path: Path, min_gene_overlap: int | None = None) -> FoundationModel:
    """Read a SCimilarity-format model directory; E and D come back frozen.

    ``min_gene_overlap``: the model's gene-overlap floor; ``None`` keeps the
    one stored with it (:data:`MIN_GENE_OVERLAP` for a published model).
    """
    missing = [name for name in MODEL_FILES if not (path / name).is_file()]
    if missing:
        raise ValueError(
            f"'{path}' is not a SCimilarity model directory: missing {missing}."
        )
    gene_order = [g for g in (path / "gene_order.tsv").read_text().splitlines() if g]
    hidden, latent = _hidden_dims(json.loads((path / "layer_sizes.json").read_text()))
    hyper = json.loads((path / "hyperparameters.json").read_text())
    encoder, decoder = build_autoencoder(
        len(gene_order),
        FoundationArchitectureParams(latent_dim=latent, hidden_dim=hidden),
    )
    encoder.load_state_dict(_load_state(path / "encoder.ckpt"))
    decoder.load_state_dict(_load_state(path / "decoder.ckpt"))
    labels = pd.read_csv(path / "label_ints.csv", index_col=0)["0"].astype(str).tolist()
    stored = int(hyper.pop("min_gene_overlap", MIN_GENE_OVERLAP))
    overlap = stored if min_gene_overlap is None else min_gene_overlap
    model = FoundationModel(encoder, decoder, gene_order, labels, hyper, overlap)
    return model.freeze()


def gene_positions(
    var_names: Sequence[str], *, gene_order: Sequence[str], min_overlap: int
) -> np.ndarray:
    """Position of each of ``var_names`` in ``gene_order`` (-1: absent).

    Raises when fewer than ``min_overlap`` genes are shared, naming both gene
    counts: a model fed mostly zeros embeds noise. Reads gene names only.
    """
    position = pd.Index(gene_order).get_indexer(pd.Index(var_names))
    overlap = int((position >= 0).sum())
    if overlap < min_overlap:
        raise ValueError(
            f"Only {overlap} of the data's {len(var_names)} genes are in the "
            f"foundation model's gene order ({len(gene_order)} genes); at least "
            f"{min_overlap} are needed (foundation.min_gene_overlap). Check that "
            "var_names use the same identifiers (symbols vs Ensembl IDs)."
        )
    return position


def _remap_columns(
    block: Any, *, keep: np.ndarray, target: np.ndarray, width: int
) -> sparse.csr_matrix:
    """Columns ``keep`` of a row block moved to ``target``; the rest zero (CSR)."""
    sub = sparse.csr_matrix(block, dtype=np.float32)[:, keep]
    out = sparse.csr_matrix(
        (sub.data, target[sub.indices], sub.indptr),
        shape=(sub.shape[0], width),
    )
    out.sum_duplicates()  # canonical: sorted columns, repeated genes summed
    return out


def align_genes(
    adata: ad.AnnData, *, gene_order: list[str], min_overlap: int
) -> ad.AnnData:
    """Reorder ``adata``'s genes to ``gene_order``; absent genes become zeros.

    Raises when fewer than ``min_overlap`` genes are shared (see
    :func:`gene_positions`). A lazy ``adata`` (dask ``X``) comes back lazy,
    its row blocks remapped as they are read: nothing is read here. In-memory
    input comes back in memory (CSR).
    """
    if list(adata.var_names) == list(gene_order):
        return adata
    position = gene_positions(
        adata.var_names, gene_order=gene_order, min_overlap=min_overlap
    )
    keep = np.flatnonzero(position >= 0)
    remap = partial(
        _remap_columns, keep=keep, target=position[keep], width=len(gene_order)
    )
    logger.info(
        "Aligned %d genes to the model's %d (%d shared, rest zero-filled)",
        adata.n_vars,
        len(gene_order),
        len(keep),
    )
    return ad.AnnData(
        X=map_csr_blocks(adata.X, remap, n_cols=len(gene_order)),
        obs=adata.obs if is_lazy(adata) else adata.obs.copy(),
        var=pd.DataFrame(index=gene_order),
    )


#: Chunks sparser than this go through E's first layer as a sparse product
#: (:func:`encode_sparse`); denser ones are densified a chunk at a time. On
#: CPU a dense GEMM does ~15x more multiply-adds per second than a sparse
#: one: measured on 12.5k genes with 2 threads, the sparse product is 2x
#: slower at 12.8% nonzeros, level at ~7%, 3x faster at 1.9%.
SPARSE_INPUT_MAX_DENSITY = 0.06


def _first_linear(encoder: Encoder) -> torch.nn.Linear | None:
    """E's input Linear when E is SCimilarity's layout (Dropout, Linear, ...)."""
    first = encoder.network[0]
    if (
        isinstance(first, torch.nn.Sequential)
        and len(first) >= 2
        and isinstance(first[0], torch.nn.Dropout)
        and isinstance(first[1], torch.nn.Linear)
    ):
        return first[1]
    return None


def encode_sparse(
    encoder: Encoder,
    x: sparse.spmatrix,
    *,
    weight_t: torch.Tensor | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """E(x) of CSR rows in eval mode, the first Linear a sparse product.

    ``x @ W.T + b`` is computed from the nonzeros (torch sparse CSR), so no
    dense ``[cells, genes]`` batch is built; the rest of E runs as usual.
    ``weight_t``: ``W.T`` made contiguous once by the caller (faster).
    """
    if encoder.training:
        raise ValueError("encode_sparse runs E in eval mode (input dropout off).")
    linear = _first_linear(encoder)
    if linear is None:
        raise ValueError("encode_sparse needs SCimilarity's Encoder layout.")
    x = sparse.csr_matrix(x, dtype=np.float32)
    index_dtype = (
        np.int32 if x.indices.dtype == x.indptr.dtype == np.int32 else np.int64
    )
    with warnings.catch_warnings():  # "sparse CSR tensor support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        xt = torch.sparse_csr_tensor(
            torch.from_numpy(x.indptr.astype(index_dtype, copy=False)),
            torch.from_numpy(x.indices.astype(index_dtype, copy=False)),
            torch.from_numpy(x.data),
            size=x.shape,
        ).to(device)
        if weight_t is None:
            weight_t = linear.weight.T.contiguous()
        h = torch.addmm(linear.bias, xt, weight_t)
    h = encoder.network[0][2:](h)
    for layer in encoder.network[1:]:
        h = layer(h)
    return F.normalize(h, p=2, dim=1)


#: Held while a worker's shared E moves to its device (tasks run in threads).
_MOVE_LOCK = threading.Lock()
#: Held while E runs on a block outside a ``distributed`` worker: the local
#: threaded scheduler then reads the next blocks while one block is embedded,
#: instead of running E in every thread at once.
_LOCAL_EMBED_LOCK = threading.Lock()


def _on_device(encoder: Encoder, device: torch.device) -> Encoder:
    """``encoder`` moved to ``device`` once (tasks on one worker share it)."""
    with _MOVE_LOCK:
        if next(encoder.parameters()).device != device:
            encoder.to(device)
    return encoder


def _embed_block(
    block: Any,
    encoder: Encoder,
    device: torch.device | str,
    *,
    chunk_size: int,
    sparse_input: bool | None,
    threads: int,
) -> np.ndarray:
    """Latents ``[rows, latent_dim]`` (float32) of one row block, E run on at
    most ``chunk_size`` rows at a time; ``device`` a spec (``"auto"``,
    ``"cuda"``...) is resolved where the task runs (on a worker: its own).
    Outside a worker, one block at a time runs E, with ``threads`` torch
    threads (the count of the thread that built the graph)."""
    if in_worker_task():
        pin_task_thread()  # Dask's threads, not torch's, in parallel
        return _embed_rows(block, encoder, device, chunk_size, sparse_input)
    with _LOCAL_EMBED_LOCK:
        if torch.get_num_threads() != threads:  # torch's count is per thread
            torch.set_num_threads(threads)
        return _embed_rows(block, encoder, device, chunk_size, sparse_input)


def _embed_rows(
    block: Any,
    encoder: Encoder,
    device: torch.device | str,
    chunk_size: int,
    sparse_input: bool | None,
) -> np.ndarray:
    """:func:`_embed_block`'s work, E on ``chunk_size`` rows at a time."""
    if isinstance(device, str):
        device = resolve_device(device)
    encoder = _on_device(encoder, device)
    block = sparse.csr_matrix(block, dtype=np.float32)
    rows, n_genes = block.shape
    out = np.empty((rows, encoder.latent_dim), dtype=np.float32)
    weight_t = None
    with torch.inference_mode():
        for i in range(0, rows, chunk_size):
            chunk = block[i : i + chunk_size]
            use_sparse = sparse_input
            if use_sparse is None:
                density = chunk.nnz / max(chunk.shape[0] * n_genes, 1)
                use_sparse = density < SPARSE_INPUT_MAX_DENSITY
            if use_sparse:
                if weight_t is None:
                    weight_t = _first_linear(encoder).weight.T.contiguous()
                z = encode_sparse(encoder, chunk, weight_t=weight_t, device=device)
            else:
                z = encoder(torch.from_numpy(chunk.toarray()).to(device))
            out[i : i + chunk.shape[0]] = z.cpu().numpy()
    return out


class _RowsInto:
    """Writes each block's latents into ``out`` at its first row, counting
    the cells on a progress bar."""

    def __init__(self, out: np.ndarray, bar: tqdm) -> None:
        self.out, self.bar = out, bar

    def __call__(self, first_row: int, z: np.ndarray) -> None:
        self.out[first_row : first_row + len(z)] = z
        self.bar.update(len(z))


@dataclass
class _EmbedTasks:
    """One delayed task per row block of ``x`` (:func:`_embed_tasks`)."""

    tasks: list[Any]
    first_rows: list[int]
    n_rows: int
    latent_dim: int


def _embed_tasks(
    encoder: Encoder,
    x: Any,
    *,
    chunk_size: int,
    device: torch.device | str,
    sparse_input: bool | None,
) -> _EmbedTasks:
    """The block tasks of :func:`embed_cells` and :func:`lazy_embeddings`.

    E is one node of the graph, a literal every block task depends on
    (shipped once, not once per task). Without a ``distributed`` client
    current E goes to ``device`` here; under one, E ships on CPU and each
    worker resolves ``device`` (a spec such as ``"auto"``) to its own
    hardware.
    """
    x = lazy_matrix(x, chunk_rows=chunk_size)
    encoder = encoder.eval()
    if sparse_input is not False and _first_linear(encoder) is None:
        sparse_input = False
    if distributed_client() is None:
        device = resolve_device(device) if isinstance(device, str) else device
        shared = encoder.to(device)
    else:
        device = device if isinstance(device, str) else str(device)
        on_cpu = next(encoder.parameters()).device.type == "cpu"
        shared = encoder if on_cpu else copy.deepcopy(encoder).cpu()
    token = uuid.uuid4().hex
    shared = dask.delayed(shared, name=f"foundation-encoder-{token}")
    embed = partial(
        _embed_block,
        chunk_size=chunk_size,
        sparse_input=sparse_input,
        threads=torch.get_num_threads(),
    )
    tasks = [
        dask.delayed(embed)(block, shared, device, dask_key_name=f"embed-{token}-{i}")
        for i, block in enumerate(x.to_delayed().ravel())
    ]
    first_rows = np.cumsum((0, *x.chunks[0]))[:-1].tolist()
    return _EmbedTasks(tasks, first_rows, x.shape[0], encoder.latent_dim)


def embed_cells(
    encoder: Encoder,
    x: Any,
    *,
    chunk_size: int = EMBED_CHUNK_SIZE,
    device: torch.device | str = "cpu",
    progress: bool = True,
    sparse_input: bool | None = None,
) -> np.ndarray:
    """Latents ``[N, latent_dim]`` (float32, row order) of log-normalised
    cells ``x`` ``[N, G]``, in memory (:func:`lazy_embeddings` for a
    latent matrix too large to hold).

    One Dask computation, one task per row block of ``x`` (lazy: the store's
    blocks; in memory: blocks of ``chunk_size`` rows). E runs in eval mode
    on at most ``chunk_size`` rows at a time, so memory beyond the output
    stays O(block). In this process (no ``distributed`` client current) the
    blocks run one after the other on the synchronous scheduler, torch using
    its intra-op threads, on ``device``; under a client they run on the
    workers, each on its own hardware.

    ``sparse_input``: the first Linear as a sparse product
    (:func:`encode_sparse`, no dense chunk) or on a dense chunk; ``None``
    picks sparse for chunks under :data:`SPARSE_INPUT_MAX_DENSITY` nonzeros
    (faster there on CPU).
    """
    graph = _embed_tasks(
        encoder, x, chunk_size=chunk_size, device=device, sparse_input=sparse_input
    )
    out = np.empty((graph.n_rows, graph.latent_dim), dtype=np.float32)
    client = distributed_client()
    what = f"Embedding {graph.n_rows:,} cells with the foundation encoder"
    with tqdm(total=len(out), desc="embed", unit="cells", disable=not progress) as bar:
        put = _RowsInto(out, bar)
        if client is None:
            sinks = [
                dask.delayed(put)(first, task)
                for first, task in zip(graph.first_rows, graph.tasks, strict=True)
            ]
            compute(*sinks, what=what, scheduler="synchronous")
        else:
            _gather_into(client, graph.tasks, graph.first_rows, put, what=what)
    return out


def lazy_embeddings(
    encoder: Encoder,
    x: Any,
    *,
    chunk_size: int = EMBED_CHUNK_SIZE,
    device: torch.device | str = "cpu",
    sparse_input: bool | None = None,
) -> da.Array:
    """:func:`embed_cells` as a dask array of dense float32 row blocks,
    computed when read or written (an ``H5ADDataset`` save streams it to
    disk block by block), so no process ever holds every cell's latents.

    Computed on threads in this process (anndata writes a dense dask array
    with Dask's threaded scheduler, under a ``distributed`` client too):
    one block runs E at a time while the next blocks are read. Compute it
    inside :func:`scdd.threads.transient_dask_threads` (``H5ADDataset``
    does): a long-lived thread that ran E slows every later torch op of the
    process.
    """
    graph = _embed_tasks(
        encoder, x, chunk_size=chunk_size, device=device, sparse_input=sparse_input
    )
    starts = [*graph.first_rows, graph.n_rows]
    return da.concatenate(
        [
            da.from_delayed(
                task, shape=(stop - start, graph.latent_dim), dtype=np.float32
            )
            for task, start, stop in zip(graph.tasks, starts, starts[1:], strict=False)
        ]
    )


def _gather_into(
    client: Client,
    tasks: list[Any],
    first_rows: list[int],
    put: _RowsInto,
    *,
    what: str,
) -> None:
    """Run the block ``tasks`` on ``client``'s workers; hand each block's
    latents to ``put`` as it arrives, then let it go (only a few blocks'
    results are alive on this process at once)."""
    with warnings.catch_warnings():
        # E is in the graph once (a literal the scheduler can recompute should
        # the worker holding it die, which scattered data is not): large, but
        # not repeated
        warnings.filterwarnings("ignore", message="Sending large graph")
        futures = client.compute(tasks)
    first_row = {
        future.key: first for future, first in zip(futures, first_rows, strict=True)
    }
    arriving = as_completed(futures, with_results=True)
    del futures
    with worker_failures_explained(what):
        for future, z in arriving:
            put(first_row[future.key], z)
