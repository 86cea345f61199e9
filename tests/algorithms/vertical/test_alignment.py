"""PSI alignment of 2+ parties: shuffled rows, partial overlap, what each party received."""
from __future__ import annotations

import numpy as np
import pytest

from fedrisk.algorithms.vertical.alignment import align_parties, alignment_salt
from fedrisk.errors import DataError, FedriskError
from fedrisk.runtime.threads import run_roles
from fedrisk.transport.channel import InMemoryNetwork


def _ids(rng, pool, keep, n_extra, offset):
    own = rng.choice(pool, keep, replace=False)
    return rng.permutation(np.concatenate([own, offset + np.arange(n_extra)]))


def test_three_parties_shuffled_partial_overlap_agree_on_one_order():
    rng = np.random.default_rng(1)
    pool = np.arange(10_000, 12_000)
    ids = {"lender": _ids(rng, pool, 1500, 200, 50_000), "payco": _ids(rng, pool, 1400, 300, 60_000),
           "bureau": _ids(rng, pool, 1600, 100, 70_000)}
    net = InMemoryNetwork(list(ids), capture=True, tag_prefixes=("psi.",))
    salt = alignment_salt("t")
    res = run_roles({p: (lambda p: lambda ch: align_parties(ch, "lender", ["payco", "bureau"], ids[p], salt=salt))(p)
                     for p in ids}, network=net)
    want = set(ids["lender"]) & set(ids["payco"]) & set(ids["bureau"])
    aligned = {p: ids[p][res[p].indices] for p in ids}
    assert set(aligned["lender"].tolist()) == want
    assert res["lender"].size == len(want) == res["payco"].size == res["bureau"].size
    assert np.array_equal(aligned["lender"], aligned["payco"]) and np.array_equal(aligned["lender"], aligned["bureau"])
    # privacy: no party received any raw id (as text or as 8-byte integers) or its own ids back in clear
    for p in ids:
        others = np.concatenate([ids[q] for q in ids if q != p])
        for env in net[p].captured:
            body = env.body
            assert env.kind in ("masked", "public-parameter", "control", "plaintext-by-design")
            if isinstance(body, np.ndarray) and body.dtype == np.uint8:
                raw = body.tobytes()
                for v in others[:50]:
                    assert str(int(v)).encode() not in raw
            if env.tag.endswith(".keep"):  # positions in the agreed order, never ids
                assert body.max() < 2000


def test_no_overlapping_ids_is_one_clear_error():
    net = InMemoryNetwork(["lender", "payco"], tag_prefixes=("psi.",))
    roles = {"lender": lambda ch: align_parties(ch, "lender", ["payco"], np.arange(100), salt="s"),
             "payco": lambda ch: align_parties(ch, "lender", ["payco"], np.arange(1000, 1100), salt="s")}
    with pytest.raises(FedriskError, match="intersection .* is empty"):
        run_roles(roles, network=net)


def test_duplicate_ids_are_refused():
    net = InMemoryNetwork(["lender", "payco"], tag_prefixes=("psi.",))
    roles = {"lender": lambda ch: align_parties(ch, "lender", ["payco"], ["1", "2", "2"], salt="s"),
             "payco": lambda ch: align_parties(ch, "lender", ["payco"], ["1", "2"], salt="s")}
    with pytest.raises((DataError, FedriskError)):
        run_roles(roles, network=net)
