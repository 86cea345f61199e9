"""The per-party SecureBoost model files' contents (what each party keeps after training)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class LabelHolderModel:
    """The label holder's part: full tree shapes, its own thresholds, all leaf weights.

    ``trees[t]["nodes"]`` lists nodes in id order; an internal node has ``owner``, ``left``,
    ``right`` and, if the label holder owns it, ``feature`` (name) and ``threshold``; a leaf has
    ``leaf`` (its weight, learning rate included).
    """

    base_score: float
    features: list[str]
    trees: list[dict]
    importance: dict[str, dict] = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    best_iteration: int = 0
    phases: dict[str, float] = field(default_factory=dict)
    host_phases: dict[str, dict] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"base_score": self.base_score, "features": self.features, "trees": self.trees,
                "importance": self.importance, "history": self.history, "best_iteration": self.best_iteration}

    @classmethod
    def from_json(cls, d: dict) -> "LabelHolderModel":
        return cls(float(d["base_score"]), list(d["features"]), list(d["trees"]), dict(d.get("importance") or {}))


@dataclass
class FeatureHolderModel:
    """A feature holder's part: for each tree, its own split nodes ``{id, feature, threshold}``."""

    features: list[str]
    trees: list[dict]
    importance: dict[str, dict] = field(default_factory=dict)
    phases: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"features": self.features, "trees": self.trees, "importance": self.importance}

    @classmethod
    def from_json(cls, d: dict) -> "FeatureHolderModel":
        return cls(list(d["features"]), list(d["trees"]), dict(d.get("importance") or {}))
