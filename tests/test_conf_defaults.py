"""``conf/base`` and the parameter classes state the same defaults: the
class is where a default lives, the YAML only documents it (or says what
differs, and then this test names it)."""

from __future__ import annotations

from typing import Any

import pytest
from kedro.config import OmegaConfigLoader
from pydantic import BaseModel

from scdd.params import GROUPS, RunParams
from tests.conftest import PROJECT_ROOT


def _shipped() -> dict[str, Any]:
    loader = OmegaConfigLoader(
        str(PROJECT_ROOT / "conf"), base_env="base", default_run_env="base"
    )
    return loader["parameters"]


def _defaults(model: type[BaseModel]) -> dict[str, Any]:
    """Every field with a default, nested groups dumped to plain values."""
    out = {}
    for name, field in model.model_fields.items():
        if field.is_required():
            continue
        value = field.get_default(call_default_factory=True)
        out[name] = value.model_dump() if isinstance(value, BaseModel) else value
    return out


@pytest.mark.parametrize("name", sorted(GROUPS))
def test_conf_base_states_the_class_defaults(name: str) -> None:
    model = GROUPS[name]
    stated = model.model_validate(_shipped()[name]).model_dump()
    differ = {
        field: (stated[field], default)
        for field, default in _defaults(model).items()
        if stated[field] != default
    }
    assert not differ, f"{name}: conf/base (left) differs from the class (right)"


def test_run_scalars_in_conf_base_are_the_defaults() -> None:
    shipped = _shipped()
    run = RunParams.model_validate({k: shipped[k] for k in RunParams.model_fields})
    assert run == RunParams()
