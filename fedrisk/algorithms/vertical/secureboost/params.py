"""SecureBoost's job settings and what both roles derive from them alone.

:class:`SecureBoostParams` is identical at every party; :class:`_RowSchedule` (validation rows and
every tree's rows) and :func:`_expected_packing` (the slot layout of the packed ``(g, h)``) are
re-derived by the feature holder from those settings, never taken from the label holder's word.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fedrisk.algorithms.boosting_params import BoostingParams
from fedrisk.algorithms.vertical.tree import check_boosting_settings
from fedrisk.errors import ProtocolError

TAG_PREFIXES = ("sb.", "sbi.")
#: bounds of one row's packed values: |g| <= 1, 0 <= h <= 1/4 for log-loss
_G_BOUND, _H_BOUND = 1.0, 0.25


@dataclass(frozen=True)
class SecureBoostParams(BoostingParams):
    """Hyper-parameters of SecureBoost, shared by all parties of a job.

    Inherits the tree-growth settings of :class:`~fedrisk.algorithms.boosting_params.BoostingParams`;
    documents here those that read differently when the label holder alone holds labels, and its own.

    Parameters
    ----------
    max_bin : int
        Quantile bins per feature (each party bins its own features).
    subsample : float
        Fraction of training rows used (and encrypted) for each tree.
    validation_fraction : float
        Fraction of training rows held out by the label holder for early stopping (0 = none).
    early_stopping_rounds : int
        Stop when the validation log-loss has not improved for this many trees (0 = off).
    scheme : {"ou", "paillier"}
        Additively homomorphic scheme of the label holder's key.
    key_bits : int
        Modulus size of that key.
    precision : int
        Fractional bits of the fixed-point ``g`` and ``h``.
    first_tree_label_holder_only : bool
        Build the first tree on the label holder's features only (a leakage mitigation).
    rows_per_ciphertext : int
        Rows whose ``(g, h)`` share one encrypted plaintext (0: the label holder picks the cheapest
        for the job's size, :func:`~fedrisk.algorithms.vertical.secureboost.row_packing.choose_rows`).
        A performance setting: the model is the same for every value.
    seed : int
        Seeds row subsampling and the validation split.
    """

    scheme: str = "ou"
    key_bits: int = 2048
    precision: int = 16
    first_tree_label_holder_only: bool = False
    rows_per_ciphertext: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        check_boosting_settings(self, "SecureBoost", [
            (self.scheme in ("ou", "paillier"), "scheme must be 'ou' or 'paillier'"),
            (isinstance(self.key_bits, int) and 512 <= self.key_bits <= 8192, "key_bits must be in [512, 8192]"),
            (isinstance(self.precision, int) and 8 <= self.precision <= 52, "precision must be an integer in [8, 52]"),
            (isinstance(self.rows_per_ciphertext, int) and 0 <= self.rows_per_ciphertext <= 8,
             "rows_per_ciphertext must be an integer in [0, 8] (0: chosen for the job's size)"),
        ])


class _RowSchedule:
    """Validation rows and every tree's gradient rows, from the shared job settings alone.

    Both roles build it (same ``seed``, ``validation_fraction``, ``subsample`` and row count), so
    the feature holder can refuse any other row set: the label holder cannot shrink a tree's rows
    to a few chosen customers and read their bins off the sums.
    """

    def __init__(self, p: SecureBoostParams, n: int) -> None:
        self.p = p
        self.rng = np.random.default_rng(p.seed)
        self.val = np.zeros(n, dtype=bool)
        if p.validation_fraction > 0:
            self.val[self.rng.choice(n, size=max(1, int(round(p.validation_fraction * n))), replace=False)] = True
        self.train_pos = np.flatnonzero(~self.val)

    def tree_rows(self) -> np.ndarray:
        """The next tree's rows (call once per tree, in order, on both sides)."""
        if self.p.subsample >= 1:
            return self.train_pos
        k = max(2, int(round(self.p.subsample * len(self.train_pos))))
        return np.sort(self.rng.choice(self.train_pos, size=k, replace=False))


def _expected_packing(p: SecureBoostParams, n_rows: int, plaintext_bits: int) -> Any:
    """The slot layout the job spec implies: what the label holder must use, derived by the feature holder.

    The layout bounds what one decrypted bin sum can hold; a label holder free to choose it
    (a huge ``max_abs``, a tiny ``max_terms`` ...) could widen slots until crafted per-row
    plaintexts decode into row memberships. So every number is re-derived from the shared job
    spec (``precision``, ``validation_fraction``) and the agreed row count, never taken from the
    label holder's message.
    """
    from fedrisk.crypto.packing import SlotPacking

    n_val = max(1, int(round(p.validation_fraction * n_rows))) if p.validation_fraction > 0 else 0
    return SlotPacking.for_sums((_G_BOUND, _H_BOUND), max(1, n_rows - n_val),
                                plaintext_bits=plaintext_bits, precision=p.precision)


def _check_declared_packing(who: str, setup: dict, packing: Any) -> None:
    """Refuse a setup whose declared layout differs from the one the job spec implies."""
    want = {"max_abs": list(packing.max_abs), "max_terms": packing.max_terms, "precision": packing.precision,
            "slot_bits": packing.slot_bits}
    for key, value in want.items():
        got = setup.get(key)
        same = (isinstance(got, list) and len(got) == len(value) and all(
            isinstance(a, (int, float)) and not isinstance(a, bool) and float(a) == float(b) for a, b in zip(got, value))
        ) if isinstance(value, list) else (isinstance(got, int) and not isinstance(got, bool) and got == value)
        if not same:
            shown = repr(got)[:40]
            raise ProtocolError(f"{who} declared SecureBoost packing {key} = {shown}, but the job spec gives {value}; "
                                f"refusing (a partner-chosen layout could expose this party's bins). Check that both "
                                f"parties run the same job spec and fedrisk version")
