"""The small foundation model the model tests share."""

import pytest

from scdd.models.foundation import FoundationArchitectureParams
from scdd.models.foundation_training import TrainConfig, train_foundation
from scdd.preprocessing import log_normalise
from tests.conftest import make_counts_adata

ARCH = FoundationArchitectureParams(hidden_dim=[64, 32], latent_dim=16)


@pytest.fixture(scope="module")
def trained():
    adata = log_normalise(make_counts_adata(), target_sum=1e4, keep_counts=False)
    labels = adata.obs["cell_type"].cat.codes.to_numpy()
    model, history = train_foundation(
        adata.X,
        gene_order=list(adata.var_names),
        labels=labels,
        label_names=list(adata.obs["cell_type"].cat.categories),
        architecture=ARCH,
        config=TrainConfig(epochs=8, batch_size=32),
        seed=0,
        progress=False,
    )
    return adata, model, history
