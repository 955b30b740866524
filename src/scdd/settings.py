"""Project settings: config loader, hooks."""

import os
import warnings

from kedro.config import OmegaConfigLoader

from scdd.hooks import (
    DaskHooks,
    LineageHooks,
    RunContextHooks,
    RunSetupHooks,
    SummaryHooks,
)

# OmegaConf 2.4 deprecates the resolver registration Kedro's config loader
# still uses; the warning is Kedro's to fix and says nothing about this project.
warnings.filterwarnings(
    "ignore", message=r"register_new_resolver\(\) is deprecated", category=UserWarning
)

# Deprecations inside Lightning (torch's pytree API) and CellTypist (scanpy's
# ``__version__``): theirs to fix, nothing a user of this project can act on.
warnings.filterwarnings(
    "ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated"
)
warnings.filterwarnings(
    "ignore", message=r"`__version__` is deprecated", module="celltypist"
)

# anndata warns on every AnnData built from an input with repeated gene names;
# preprocessing resolves them (preprocess.duplicate_genes) and says so once.
warnings.filterwarnings(
    "ignore", message=r"Variable names are not unique", module="anndata"
)

# A rejected parameter's message ends with what is allowed, not with a link to
# Pydantic's error catalogue.
os.environ.setdefault("PYDANTIC_ERRORS_INCLUDE_URL", "0")

HOOKS = (
    RunSetupHooks(),
    RunContextHooks(),
    DaskHooks(),
    LineageHooks(),
    SummaryHooks(),
)

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
}
