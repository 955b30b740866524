"""Project settings: config loader, hooks."""

from kedro.config import OmegaConfigLoader

from scdd.hooks import ReproducibilityHooks

HOOKS = (ReproducibilityHooks(),)

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
}
