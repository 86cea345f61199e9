"""Who is who in a vertical job, shared by every vertical task kind.

Exactly one party holds the label (the label holder drives the job and writes metrics); every
other party is a feature holder; there is no coordinator; test rows are chosen by an id rule.
"""
from __future__ import annotations

from fedrisk.errors import ConfigError
from fedrisk.runtime.spec import JobSpec

__all__ = ["validate_vertical", "driver", "roles", "model_file", "load_table", "inference_features"]


def validate_vertical(spec: JobSpec, where: str, kind: str) -> None:
    """The role checks every vertical task makes, with one-line errors naming the fix."""
    holders = spec.label_holders()
    if len(holders) != 1:
        raise ConfigError(f"{where}: {kind} needs exactly one party with label = '...' (the label holder); "
                          f"found {len(holders)}: {holders}")
    if len(spec.parties) < 2:
        raise ConfigError(f"{where}: {kind} needs at least one feature holder besides the label holder")
    if spec.coordinator is not None:
        raise ConfigError(f"{where}: {kind} has no coordinator (the label holder drives); remove the [coordinator] table")
    if spec.evaluation.test is not None:
        raise ConfigError(f"{where}: vertical jobs split by id; use evaluation.test_rule = 'id % 5 == 0', not evaluation.test")


def driver(spec: JobSpec) -> str:
    """The label holder."""
    return spec.label_holders()[0]


def roles(spec: JobSpec) -> tuple[str, list[str]]:
    """(label holder, feature holders in spec order)."""
    lh = driver(spec)
    return lh, [p for p in spec.parties if p != lh]


def model_file(party: str, label_holder: str) -> str:
    return "model.json" if party == label_holder else f"model-{party}.json"


def load_table(spec: JobSpec, name: str, path=None, features=None, require_label: bool | None = None):
    """Load a party's numeric table with the vertical rules (a feature holder must not hold the label)."""
    from fedrisk.data.loading import load_party_table

    p = spec.parties[name]
    lh = driver(spec)
    forbid = spec.parties[lh].label if name != lh else None
    return load_party_table(path or spec.data_path(name), party=name, id_col=p.id,
                            label_col=p.label if name == lh else None, features=features if features else p.features,
                            exclude=p.exclude if not features else (), missing=p.missing, forbid_label=forbid,
                            require_label=require_label)


def inference_features(role_model: dict) -> list[str]:
    """Inference hook: the columns a party loads from its scoring file (those its model part uses)."""
    return list(role_model["features"])
