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


def _run_pair(lender_ids, payco_ids, caplog, capture=False):
    import logging

    net = InMemoryNetwork(["lender", "payco"], capture=capture, tag_prefixes=("psi.",))
    logs = {p: logging.getLogger(f"test.align.{p}") for p in ("lender", "payco")}
    ids = {"lender": lender_ids, "payco": payco_ids}
    with caplog.at_level(logging.INFO):
        res = run_roles({p: (lambda p: lambda ch: align_parties(ch, "lender", ["payco"], ids[p], salt="s",
                                                               log=logs[p]))(p) for p in ids}, network=net)
    warn = {p: [r.getMessage() for r in caplog.records if r.name == logs[p].name and r.levelname == "WARNING"]
            for p in ids}
    return res, warn, net


def test_a_partial_id_format_mismatch_is_reported_locally_at_every_party(caplog):
    """30 % of payco's ids zero-padded ('0002346' vs '2346'): the intersection shrinks silently by 30 %.
    Each party is told in its own log, with counts of its own id formats only; nothing new is sent."""
    rng = np.random.default_rng(3)
    raw = [str(v) for v in rng.choice(np.arange(1000, 99_999), 2000, replace=False)]
    padded = [v.zfill(7) if rng.random() < 0.3 else v for v in raw]
    res, warn, net = _run_pair(list(raw), padded, caplog, capture=True)
    assert 0.6 * 2000 < res["lender"].size < 0.8 * 2000
    for p in ("lender", "payco"):
        assert len(warn[p]) == 1, warn
        assert f"only {res[p].size} of this party's 2000 rows" in warn[p][0]
        assert "'00123' and '123'" in warn[p][0]  # what to check
    assert "leading zeros on some" in warn["payco"][0] and "leading zeros on some" not in warn["lender"][0]
    for p, w in warn.items():  # counts and lengths of its own ids, never an id
        assert not any(v in w[0] for v in raw[:200] + padded[:200]), w
    # nothing was added on the wire: the same tags and kinds as a clean run
    tags = sorted({(e.tag, e.kind) for p in ("lender", "payco") for e in net[p].captured})
    _, _, clean = _run_pair(list(raw), list(raw), caplog, capture=True)
    assert tags == sorted({(e.tag, e.kind) for p in ("lender", "payco") for e in clean[p].captured})


def test_a_full_overlap_and_a_small_by_design_lender_give_no_warning(caplog):
    ids = [f"C{i:06d}" for i in range(3000)]
    _, warn, _ = _run_pair(ids[:500], ids, caplog)  # the lender's 500 customers are all at the bureau
    assert warn == {"lender": [], "payco": []}


@pytest.mark.parametrize("lender, payco, words", [
    (["12", "13", "14"], ["12.0", "13.0", "14.0"], "written as decimal numbers"),
    (["c1", "c2", "c3"], ["C1", "C2", "c4"], "mixed upper and lower case"),
])
def test_an_empty_intersection_logs_this_partys_id_formats(caplog, lender, payco, words):
    import logging

    net = InMemoryNetwork(["lender", "payco"], tag_prefixes=("psi.",))
    log = logging.getLogger("test.align.empty")
    roles = {"lender": lambda ch: align_parties(ch, "lender", ["payco"], lender, salt="s"),
             "payco": lambda ch: align_parties(ch, "lender", ["payco"], payco, salt="s", log=log)}
    with caplog.at_level(logging.INFO), pytest.raises(FedriskError):
        run_roles(roles, network=net)
    text = " ".join(r.getMessage() for r in caplog.records if r.name == log.name and r.levelname == "WARNING")
    assert words in text, text


def test_the_empty_intersection_error_names_no_setting_the_spec_lacks():
    from fedrisk.algorithms.vertical.psi_protocol import empty_intersection_error

    assert "casefold" not in str(empty_intersection_error("lender", "all parties"))


def test_describe_id_formats_counts_only():
    from fedrisk.algorithms.vertical.alignment import describe_id_formats

    text = describe_id_formats(["0012", "12", "345", "7.0", "ab", "AB", "Zoë 1"])
    assert "7 ids" in text and "leading zeros on some" in text and "decimal" in text and "upper and lower" in text
    assert "inner spaces" in text and "non-ASCII" in text
    assert not any(v in text for v in ("0012", "345", "Zoë"))
