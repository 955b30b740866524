from pathlib import Path

from kedro.pipeline import node, pipeline

from scdd.lineage import (
    LineageStore,
    digest,
    plan_recipes,
    source_fingerprint,
    stale_reason,
)


def _identity(x, params):
    return x


def _two_stages():
    return pipeline(
        [
            node(_identity, ["raw", "params:a"], "mid", name="first"),
            node(_identity, ["mid", "params:b"], "out", name="second"),
        ]
    )


def _plan(params, source="raw-v1"):
    return plan_recipes(_two_stages(), lambda n: params[n], {"raw": source})


PARAMS = {"params:a": {"x": 1}, "params:b": 2, "params:seed": 0}


def test_a_parameter_change_reaches_every_artefact_downstream() -> None:
    before = _plan(PARAMS)
    after = _plan({**PARAMS, "params:a": {"x": 2}})
    assert all(before[k].fingerprint != after[k].fingerprint for k in before)
    later = _plan({**PARAMS, "params:b": 3})
    assert later["mid"].fingerprint == before["mid"].fingerprint
    assert later["out"].fingerprint != before["out"].fingerprint


def test_another_input_file_or_seed_changes_everything() -> None:
    """No node takes the seed as an input (nodes read it from the run
    context), yet every artefact's recipe names it."""
    before = _plan(PARAMS)
    other = _plan(PARAMS, source="raw-v2")
    assert all(before[k].fingerprint != other[k].fingerprint for k in before)
    reseeded = _plan({**PARAMS, "params:seed": 1})
    assert all(before[k].fingerprint != reseeded[k].fingerprint for k in before)
    assert all("params:seed" in recipe.params for recipe in before.values())


def test_stale_reasons_name_what_changed(tmp_path: Path) -> None:
    store = LineageStore(tmp_path)
    recipes = _plan(PARAMS)
    store.write("out", recipes["out"], input="a.h5ad", label_key="cell_type")
    same = {"input": "a.h5ad", "label_key": "cell_type"}
    assert stale_reason(recipes["out"], store.read("out"), same) is None
    reason = stale_reason(
        _plan(PARAMS, "raw-v2")["out"],
        store.read("out"),
        {"input": "b.h5ad", "label_key": "cell_type"},
    )
    assert "input was 'a.h5ad', this run uses 'b.h5ad'" in reason
    reason = stale_reason(
        _plan({**PARAMS, "params:b": 5})["out"], store.read("out"), same
    )
    assert reason == "params:b changed"
    assert "no record" in stale_reason(recipes["mid"], store.read("mid"), same)


def test_a_file_source_changes_when_the_file_does(tmp_path: Path) -> None:
    path = tmp_path / "in.h5ad"
    path.write_text("one")
    first = source_fingerprint(str(path))
    path.write_text("three")
    assert source_fingerprint(str(path)) != first
    assert source_fingerprint("scanpy://pbmc68k_reduced") == source_fingerprint(
        "scanpy://pbmc68k_reduced"
    )


def test_a_zarr_source_changes_when_its_files_do(tmp_path: Path) -> None:
    store = tmp_path / "in.zarr"
    (store / "X").mkdir(parents=True)
    (store / "X" / "0").write_text("one")
    first = source_fingerprint(str(store))
    assert source_fingerprint(str(store)) == first
    (store / "X" / "0").write_text("three")
    assert source_fingerprint(str(store)) != first
    missing = source_fingerprint(str(tmp_path / "gone.zarr"))
    assert missing not in (first, source_fingerprint(str(store)))


def test_digest_is_order_independent() -> None:
    assert digest({"a": 1, "b": [1, 2]}) == digest({"b": [1, 2], "a": 1})
