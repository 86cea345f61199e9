"""Every ``[task]`` setting is declared once: in the task's pydantic ``Params``.

The algorithm configs the tasks build (``HeteroLRConfig``, ``SecureBoostParams``, ``GbdtParams``,
``BinningConfig``, ``FedAvgConfig``/``NewtonConfig``, ``Scorecard``) carry defaults of their own so
the protocols can be called directly (tests, notebooks); these tests make sure those can never
drift from the declaration, that each builder passes every setting through, and that the
estimators' keywords are exactly the Params' fields.
"""
from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import pytest

from fedrisk.runtime.tasks import TASKS, get_task

#: the Params methods that build an algorithm config (some take the federation seed)
BUILDERS = ("config", "hetero", "solver_config", "binning", "card")


def _defaults(cls: type) -> dict[str, Any]:
    if dataclasses.is_dataclass(cls):
        out = {}
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                out[f.name] = f.default
            elif f.default_factory is not dataclasses.MISSING:
                out[f.name] = f.default_factory()
        return out
    return {n: p.default for n, p in inspect.signature(cls).parameters.items() if p.default is not p.empty}


def _build(params: Any, meth: str) -> Any:
    fn = getattr(params, meth)
    return fn(7) if "seed" in inspect.signature(fn).parameters else fn()


def _variants(P: type) -> list[Any]:
    """Default Params, and one per solver choice (a builder may pick a config by solver)."""
    out = [P()]
    solver = P.model_fields.get("solver")
    if solver is not None:
        for choice in getattr(solver.annotation, "__args__", ()):
            out.append(P(solver=choice))
    return out


def _kinds() -> list[str]:
    have = []
    for kind in TASKS:
        try:
            get_task(kind)
        except Exception:  # noqa: BLE001 - a kind absent from this build
            continue
        have.append(kind)
    return have


@pytest.mark.parametrize("kind", _kinds())
def test_algorithm_config_defaults_are_the_declared_defaults(kind):
    P = get_task(kind).Params
    checked = 0
    for params in _variants(P):
        for meth in BUILDERS:
            if not hasattr(params, meth):
                continue
            cfg = _build(params, meth)
            shared = [n for n in _defaults(type(cfg)) if n in P.model_fields]
            for name in shared:
                declared = P.model_fields[name].get_default(call_default_factory=True)
                assert _defaults(type(cfg))[name] == declared, \
                    f"{kind}: {type(cfg).__name__}.{name} defaults to {_defaults(type(cfg))[name]!r}, Params to {declared!r}"
                checked += 1
    assert checked, f"{kind}: no builder maps any setting (add it to BUILDERS)"


def _changed(P: type, params: Any) -> dict[str, Any]:
    """A valid non-default value for every numeric setting (to see that builders pass it on)."""
    out = {}
    for name, f in P.model_fields.items():
        v = getattr(params, name)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        for cand in ((v + 1, v * 2, v - 1) if isinstance(v, int) else (v * 0.5, v * 0.9, v + 0.1, v + 0.01)):
            if cand == v:
                continue
            try:
                P(**{**params.model_dump(), name: type(v)(cand)})
            except Exception:  # noqa: BLE001 - out of the declared range: try the next value
                continue
            out[name] = type(v)(cand)
            break
    return out


@pytest.mark.parametrize("kind", _kinds())
def test_builders_pass_every_declared_setting_through(kind):
    P = get_task(kind).Params
    for base in _variants(P):
        for name, value in _changed(P, base).items():
            params = P(**{**base.model_dump(), name: value})
            for meth in BUILDERS:
                if not hasattr(params, meth):
                    continue
                cfg = _build(params, meth)
                if name in _defaults(type(cfg)):
                    assert getattr(cfg, name) == value, f"{kind}: {meth}() drops {name}={value!r}"


def test_the_tree_tasks_share_one_declaration_of_the_boosting_settings():
    from fedrisk.tasks.boosting_params import BoostingParams

    for kind in ("vertical.secureboost", "horizontal.gbdt"):
        if kind not in _kinds():
            continue
        P = get_task(kind).Params
        assert issubclass(P, BoostingParams)
        own = set(P.model_fields) - set(BoostingParams.model_fields)
        assert not own & set(BoostingParams.model_fields)
        assert all(P.model_fields[n] is BoostingParams.model_fields[n] or
                   P.model_fields[n].get_default() == BoostingParams.model_fields[n].get_default()
                   for n in BoostingParams.model_fields)


def test_the_tree_trainers_share_one_dataclass_of_the_boosting_settings():
    from fedrisk.algorithms.boosting_params import BoostingParams as Shared
    from fedrisk.algorithms.horizontal.gbdt import GbdtParams
    from fedrisk.algorithms.vertical.secureboost import SecureBoostParams
    from fedrisk.tasks.boosting_params import BoostingParams

    assert issubclass(GbdtParams, Shared) and issubclass(SecureBoostParams, Shared)
    assert _defaults(Shared) == {n: f.get_default() for n, f in BoostingParams.model_fields.items()}
