"""Task registry: ``[task] kind = "..."`` -> the module that runs it.

A task module is the glue between the runtime and one algorithm. It exposes

* ``Params``: a pydantic model (``extra="forbid"``) of the ``[task]`` table minus ``kind``;
* ``validate_spec(spec, where)``: role checks (who must hold labels, is a coordinator needed);
* ``driver(spec) -> str``: the participant that reports progress and writes ``metrics.json``;
* ``run(ctx: PartyContext) -> None``: this participant's part of the job.

Hyper-parameters are declared once, in ``Params``; algorithms receive them from there.
"""
from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from fedrisk.errors import ConfigError

__all__ = ["TASKS", "get_task", "parse_params"]

TASKS = {
    "horizontal.lr": "fedrisk.tasks.horizontal_lr",
    "horizontal.gbdt": "fedrisk.tasks.horizontal_gbdt",
    "vertical.lr": "fedrisk.tasks.vertical_lr",
    "vertical.secureboost": "fedrisk.tasks.vertical_secureboost",
    "horizontal.woe": "fedrisk.tasks.horizontal_woe",
    "vertical.woe": "fedrisk.tasks.vertical_woe",
    "horizontal.scorecard": "fedrisk.tasks.horizontal_scorecard",
    "vertical.scorecard": "fedrisk.tasks.vertical_scorecard",
}

P = TypeVar("P", bound=BaseModel)


def get_task(kind: str, where: str = "job spec") -> ModuleType:
    if kind not in TASKS:
        raise ConfigError(f"{where}: task.kind {kind!r} is not known; choose one of {sorted(TASKS)}")
    try:
        return importlib.import_module(TASKS[kind])
    except ModuleNotFoundError as e:
        if e.name and e.name.startswith("fedrisk.tasks"):
            raise ConfigError(f"{where}: task.kind {kind!r} is not available in this version of fedrisk") from None
        raise


def parse_params(model: type[P], table: dict[str, Any], where: str = "job spec") -> P:
    """Validate the ``[task]`` table (without ``kind``) into ``model``, with one-line errors."""
    from fedrisk.runtime.spec import bool_where_number

    body = {k: v for k, v in table.items() if k != "kind"}
    wrong = bool_where_number(model, body, "task.")
    if wrong:
        raise ConfigError(f"{where}: {wrong}")
    try:
        return model.model_validate(body)
    except ValidationError as e:
        parts = []
        for err in e.errors():
            loc = ".".join(str(x) for x in err["loc"])
            if err["type"] == "extra_forbidden":
                import difflib

                close = difflib.get_close_matches(loc, list(model.model_fields), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else f"; known: {', '.join(model.model_fields)}"
                parts.append(f"task.{loc}: unknown setting{hint}")
            else:
                parts.append(f"task.{loc}: {err['msg'].removeprefix('Value error, ')}")
        raise ConfigError(f"{where}: " + "; ".join(parts)) from None
