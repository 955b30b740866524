"""notebooks/explore_synthetic.ipynb runs against a freshly built project copy."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient

from tests.conftest import PROJECT_ROOT
from tests.kedro_helpers import run_session

NOTEBOOK = PROJECT_ROOT / "notebooks" / "explore_synthetic.ipynb"

#: The whole ``__default__`` run at toy size (about a minute on 2 CPU cores).
TINY = {
    "progress": False,
    "foundation": {"train": {"epochs": 2}},
    "generator": {
        "train": {"steps": 20},
        "report": {
            "samples_per_class": 10,
            "sample_steps": [1],
            "min_cells_frechet": 10000,
        },
    },
    "distill": {"optim": {"steps": 5}},
    "evaluate": {
        "f_head": {"n_inits": 1, "epochs": 50},
        "celltypist": {"n_inits": 1},
        "gene_mlp": {"n_inits": 1, "steps": 5},
        "gene_transformer": {"n_inits": 1, "steps": 5},
        "deepinsight_cnn": {"n_inits": 1, "steps": 5},
    },
}


def test_python3_kernel_is_this_interpreter() -> None:
    """ipykernel's native ``python3`` spec runs ``python``, which jupyter_client
    replaces by ``sys.executable``: no ``ipykernel install`` step is needed."""
    spec = KernelSpecManager().get_kernel_spec("python3")
    assert spec.argv[0] in {"python", "python3", sys.executable}


def test_notebook_runs_on_the_catalog(
    project_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEDRO_DISABLE_TELEMETRY", "1")
    run_session(project_copy, "__default__", TINY)
    (project_copy / "notebooks").mkdir()
    notebook = project_copy / "notebooks" / NOTEBOOK.name
    shutil.copy(NOTEBOOK, notebook)

    nb = nbformat.read(notebook, as_version=4)
    client = NotebookClient(
        nb,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(notebook.parent)}},
    )
    client.execute()

    outputs = [
        out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs
    ]
    assert not [out for out in outputs if out.output_type == "error"]
    texts = [
        str(out.get("text", "")) + str(out.get("data", {}).get("text/plain", ""))
        for out in outputs
    ]
    assert not [t for t in texts if "warning" in t.lower()], "a warning showed"
    assert not [out for out in outputs if out.get("name") == "stderr"]
    assert sum("image/png" in out.get("data", {}) for out in outputs) == 4
    assert any("retention" in t for t in texts)  # the model table
    assert any("nearest-record ratio" in t for t in texts)  # the privacy table
    assert (project_copy / "data" / "08_reporting" / "umap.png").is_file()  # stable
