"""The base every parameter group derives from, and the field types they share.

A parameter group is one Pydantic model that lives beside the code it
configures and is what that code takes (``scdd.distill.config``,
``scdd.evaluation.config``, ...); :mod:`scdd.params` gathers them for Kedro.
Every group refuses unknown keys, naming the allowed ones (a typo'd key is an
error, not a silently ignored setting), and is immutable once validated.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

PositiveInt = Annotated[int, Field(ge=1)]
NonNegativeInt = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]
#: Dropout-like rates: 1 would drop everything.
Rate = Annotated[float, Field(ge=0, lt=1)]
Probability = Annotated[float, Field(ge=0, le=1)]
Size = tuple[PositiveFloat, PositiveFloat]


def did_you_mean(word: str, choices: Sequence[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices``, or ``""``."""
    close = difflib.get_close_matches(word, choices, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def refuse_repeats(values: Sequence[Any] | None, what: str) -> None:
    """Refuse a list that names an entry twice."""
    if values is None:
        return
    seen: set[Any] = set()
    twice = [v for v in values if v in seen or seen.add(v)]
    if twice:
        raise ValueError(f"{what} lists {sorted(set(twice), key=str)} twice")


def as_list(value: Any) -> Any:
    """A single string is a one-column list."""
    return [value] if isinstance(value, str) else value


class ParamGroup(BaseModel):
    """A parameter group: unknown keys refused, immutable after validation."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _refuse_unknown_keys(cls, data: Any) -> Any:
        # extra="forbid" would refuse them too, without naming the keys allowed
        if isinstance(data, Mapping):
            allowed = list(cls.model_fields)
            unknown = [str(key) for key in data if key not in cls.model_fields]
            if unknown:
                hints = "".join(did_you_mean(key, allowed) for key in unknown[:1])
                raise ValueError(
                    f"unknown key(s) {unknown}{hints}; allowed keys: "
                    f"{', '.join(allowed)}"
                )
        return data
