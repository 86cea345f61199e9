"""SecureBoost under a deviating label holder (issue 12, items 2, 5 and 6).

* item 5: the packing layout (``max_abs``, ``max_terms``, ``precision``) was taken from the label
  holder's ``sb.setup``; a crafted one (wide slots) lets crafted per-row plaintexts decode into row
  memberships. The feature holder now derives the layout from the job spec and refuses any other.
* item 2: scoring used to answer one bit per scored row at *every* split node of the feature
  holder; it now answers only for rows that reach the node (level by level).
"""
from __future__ import annotations

import numpy as np
import pytest

from fedrisk.algorithms.vertical.secureboost import (
    SecureBoostFeatureHolder,
    SecureBoostLabelHolder,
    SecureBoostParams,
    score_feature_holder,
    score_label_holder,
)
from fedrisk.algorithms.vertical.secureboost.params import _G_BOUND, _H_BOUND
from fedrisk.crypto.additive import generate_keypair
from fedrisk.crypto.packing import SlotPacking
from fedrisk.errors import ProtocolError, TransportError
from fedrisk.runtime.threads import run_roles
from fedrisk.transport.channel import InMemoryNetwork

FAST = dict(key_bits=1024, max_bin=16, n_trees=4, max_depth=3)


def _crafted_setup_run(crafted: dict, n: int = 300):
    """A label holder sends a setup with ``crafted`` fields; returns what the feature holder did."""
    params = SecureBoostParams(**FAST)
    X = np.random.default_rng(0).normal(size=(n, 3))
    pub, _ = generate_keypair("ou", 1024)
    honest = SlotPacking.for_sums((_G_BOUND, _H_BOUND), n, plaintext_bits=pub.plaintext_bits, precision=16)
    layout = {"max_abs": list(honest.max_abs), "max_terms": honest.max_terms, "precision": 16}
    layout.update(crafted)
    # a self-consistent slot width for the crafted layout, so only the values themselves are wrong
    slot = SlotPacking.for_sums(tuple(layout["max_abs"]), int(layout["max_terms"]),
                                plaintext_bits=pub.plaintext_bits, precision=int(layout["precision"])).slot_bits
    setup = {"pk": pub.to_wire(), "slot_bits": slot, **layout, "n_rows": n}

    def evil_lh(ch):
        ch.send("h1", "sb.setup", setup, kind="public-parameter")
        bins = ch.recv("h1", "sb.bins")  # the feature holder accepted the layout and joins training
        ch.send("h1", "sb.t0.grad", {"stop": True}, kind="plaintext-by-design")
        return {"accepted": True, "slot_bits": slot, "honest_slot_bits": honest.slot_bits, "bins": bins}

    def host(ch):
        try:
            SecureBoostFeatureHolder(params).fit(ch, "lh", X, ["a", "b", "c"])
        except TransportError:
            return "joined training"  # the label holder left after seeing the bins: it was accepted
        return "trained"

    return run_roles({"lh": evil_lh, "h1": host}, recv_timeout=5.0)


@pytest.mark.parametrize("crafted, field", [
    ({"max_abs": [2.0 ** 100, 2.0 ** 100]}, "max_abs"),  # slots 8x as wide as honest ones
    ({"max_terms": 1}, "max_terms"),
    ({"precision": 8}, "precision"),
])
def test_crafted_packing_is_refused_with_one_line(crafted, field):
    with pytest.raises(ProtocolError) as info:
        _crafted_setup_run(crafted)
    msg = str(info.value)
    assert f"packing {field}" in msg and "job spec" in msg and "\n" not in msg


def test_the_honest_layout_is_accepted():
    out = _crafted_setup_run({})
    assert out["lh"]["accepted"] and out["h1"] == "joined training"


def test_scoring_answers_only_for_rows_that_reach_each_node():
    """Count the bits the label holder receives per scored row: at most one per tree level on the path."""
    rng = np.random.default_rng(5)
    n, m = 900, 400
    X = rng.normal(size=(n + m, 6))
    z = X[:, 0] + X[:, 3] - X[:, 4] * X[:, 1]
    y = (rng.random(n + m) < 1 / (1 + np.exp(-z))).astype(float)
    params = SecureBoostParams(**{**FAST, "n_trees": 6, "max_depth": 4})
    parts = [X[:, :2], X[:, 2:]]

    def lh(ch):
        est = SecureBoostLabelHolder(params).fit(ch, ["h1"], parts[0][:n], y[:n], ["a", "b"])
        return est, score_label_holder(ch, est.model_, parts[0][n:], ["h1"], tag="t")

    def h1(ch):
        est = SecureBoostFeatureHolder(params).fit(ch, "lh", parts[1][:n], ["c", "d", "e", "f"])
        score_feature_holder(ch, est.model_, parts[1][n:], "lh", tag="t")
        return est

    net = InMemoryNetwork(["lh", "h1"], capture=True)
    res = run_roles({"lh": lh, "h1": h1}, network=net)
    est, proba = res["lh"]
    host_model = res["h1"].model_
    # what the label holder received while scoring: one answer bit per (row, node) it asked about
    revealed = 0
    for e in net["lh"].captured:
        if e.tag == "sbi.t.bits":  # the old protocol: one bit for every scored row at every host node
            revealed += int(np.asarray(e.body["nodes"]).reshape(-1, 2).shape[0]) * m
    for e in net["h1"].captured:  # level by level: the rows asked about are the rows answered
        if e.tag.startswith("sbi.t.q") and "rows" in e.body:
            revealed += sum(len(r) for r in e.body["rows"])
    answered = [e for e in net["lh"].captured if e.tag.startswith("sbi.t.a")]
    assert revealed and (answered or any(e.tag == "sbi.t.bits" for e in net["lh"].captured))
    n_host_nodes = sum(len(t["nodes"]) for t in host_model.trees)
    # the exact number a row-on-path protocol needs: host nodes on each row's path
    on_path = _host_nodes_on_paths(est.model_, host_model, parts[0][n:], parts[1][n:])
    per_row = revealed / m
    assert n_host_nodes > 2 * on_path / m  # answering every node would reveal over twice as much
    assert revealed == on_path, (revealed, on_path, n_host_nodes * m)
    assert per_row <= params.n_trees * params.max_depth
    # and the scores are unchanged: the plaintext walk over the pooled columns agrees
    np.testing.assert_allclose(proba, _pooled_scores(est.model_, host_model, parts[0][n:], parts[1][n:]), rtol=1e-12)


def _walk_pooled(lh_model, host_model, X_lh, X_h):
    """Plaintext walk with both parties' columns: (margins, host nodes reached by each row)."""
    from fedrisk.algorithms.vertical.secureboost.scoring import _split_left

    cols = {f: i for i, f in enumerate(lh_model.features)}
    hcols = {f: i for i, f in enumerate(host_model.features)}
    hnodes = {(t, int(nd["id"])): nd for t, tr in enumerate(host_model.trees) for nd in tr["nodes"]}
    margin = np.full(len(X_lh), float(lh_model.base_score))
    reached = 0
    for t, tree in enumerate(lh_model.trees):
        nodes = {int(nd["id"]): nd for nd in tree["nodes"]}
        for i in range(len(X_lh)):
            nid = 0
            while "leaf" not in nodes[nid]:
                nd = nodes[nid]
                if "threshold" in nd:
                    left = bool(_split_left(X_lh[i:i + 1, cols[nd["feature"]]], nd)[0])
                else:
                    reached += 1
                    hn = hnodes[(t, nid)]
                    left = bool(_split_left(X_h[i:i + 1, hcols[hn["feature"]]], hn)[0])
                nid = int(nd["left"] if left else nd["right"])
            margin[i] += float(nodes[nid]["leaf"])
    return margin, reached


def _host_nodes_on_paths(lh_model, host_model, X_lh, X_h):
    return _walk_pooled(lh_model, host_model, X_lh, X_h)[1]


def _pooled_scores(lh_model, host_model, X_lh, X_h):
    return 1 / (1 + np.exp(-_walk_pooled(lh_model, host_model, X_lh, X_h)[0]))


def test_label_holder_cannot_choose_a_few_rows_per_tree():
    """Item 6 (cheap defence): a tree over 3 chosen rows would put one known customer in each bin
    sum; the rows of every tree now follow from the job's seed/subsample, and others are refused."""
    from fedrisk.algorithms.vertical.secureboost.params import _expected_packing

    params = SecureBoostParams(**{**FAST, "subsample": 0.8})
    n = 300
    X = np.random.default_rng(0).normal(size=(n, 3))
    pub, _ = generate_keypair("ou", 1024)
    packing = _expected_packing(params, n, pub.plaintext_bits)

    def evil_lh(ch):
        ch.send("h1", "sb.setup", {"pk": pub.to_wire(), "slot_bits": packing.slot_bits, "max_abs": list(packing.max_abs),
                                   "max_terms": packing.max_terms, "precision": packing.precision, "n_rows": n},
                kind="public-parameter")
        ch.recv("h1", "sb.bins")
        ch.send("h1", "sb.t0.grad", {"rows": np.array([3, 17, 42], dtype=np.int64), "chunks": 1},
                kind="plaintext-by-design")
        ch.recv("h1", "sb.t0.d0.hist")  # would be per-bin sums over the three chosen customers
        return "got bins of 3 rows"

    with pytest.raises(ProtocolError, match="differ from the 240 rows the job's seed"):
        run_roles({"lh": evil_lh, "h1": lambda ch: SecureBoostFeatureHolder(params).fit(ch, "lh", X, ["a", "b", "c"])},
                  recv_timeout=10.0)


def test_crafted_gradients_measure_what_a_malicious_label_holder_still_decodes():
    """Item 6 (documented limit, measured): the label holder encrypts ``2^i`` for ``W`` rows instead
    of packed ``(g, h)``. With the spec-fixed layout each decrypted root bin sum is a ``W``-bit mask
    (``W = 2 * slot_bits``), so one tree's root histogram still gives the bin of ``W`` rows in every
    feature of the feature holder. Before item 5 a crafted layout let ``W`` grow to the plaintext size."""
    from fedrisk.algorithms.vertical.binning import QuantileBinner
    from fedrisk.algorithms.vertical.secureboost.params import _expected_packing, _RowSchedule

    params = SecureBoostParams(**{**FAST, "scheme": "paillier"})
    n = 300
    X = np.random.default_rng(1).normal(size=(n, 3))
    pub, priv = generate_keypair("paillier", 1024)
    packing = _expected_packing(params, n, pub.plaintext_bits)
    W = packing.total_bits

    def evil_lh(ch):
        ch.send("h1", "sb.setup", {"pk": pub.to_wire(), "slot_bits": packing.slot_bits, "max_abs": list(packing.max_abs),
                                   "max_terms": packing.max_terms, "precision": packing.precision, "n_rows": n},
                kind="public-parameter")
        info = ch.recv("h1", "sb.bins")
        nb, skip = np.asarray(info["n_bins"]), np.asarray(info["skip"])
        rows = _RowSchedule(params, n).tree_rows()
        ch.send("h1", "sb.t0.grad", {"rows": rows.astype(np.int64), "chunks": 1}, kind="plaintext-by-design")
        crafted = [1 << i if i < W else 0 for i in range(len(rows))]
        ch.send("h1", "sb.t0.grad.0", {"cts": pub.encrypt_to_wire(crafted)}, kind="ciphertext")
        ch.send("h1", "sb.t0.d0.plan", {"parts": [], "build": [0]}, kind="plaintext-by-design")
        hist = ch.recv("h1", "sb.t0.d0.hist")
        plain = priv.decrypt(pub.ciphertexts_from_wire(hist["cts"]))
        g = packing.max_group
        flat = [(plain[k // g] >> (W * (k % g))) & ((1 << W) - 1) for k in range(int(nb.sum()))]
        offs = np.concatenate([[0], np.cumsum(nb)[:-1]])
        decoded = np.full((W, len(nb)), -1)
        for f in range(len(nb)):
            decoded[:, f] = skip[f]  # rows in no summed bin are in the skipped one
            for b in range(nb[f]):
                if b != skip[f]:
                    for i in range(W):
                        if flat[offs[f] + b] >> i & 1:
                            decoded[i, f] = b
        ch.send("h1", "sb.t0.d0.win", {"nodes": np.zeros(0, dtype=np.int64)}, kind="control")
        ch.send("h1", "sb.t0.d1.plan", {"done": True}, kind="plaintext-by-design")
        ch.send("h1", "sb.t1.grad", {"stop": True}, kind="control")
        ch.send("h1", "sb.importance", {"n_trees": 0, "splits": np.zeros(len(nb), dtype=np.int64),
                                        "gain": np.zeros(len(nb))}, kind="aggregate")
        ch.recv("h1", "sb.stats")
        return decoded, rows[:W]

    out = run_roles({"lh": evil_lh, "h1": lambda ch: SecureBoostFeatureHolder(params).fit(ch, "lh", X, ["a", "b", "c"])},
                    recv_timeout=60.0)
    decoded, which = out["lh"]
    truth = QuantileBinner(params.max_bin).fit(X).transform(X)[which]
    # the measured limit: W rows per tree's root histogram, every feature, exactly
    assert W == 2 * packing.slot_bits and W < 80
    assert np.array_equal(decoded, truth)


def test_label_holder_cannot_cut_a_node_down_to_one_customer(monkeypatch):
    """A deviating label holder splits the root on its own feature so that one child holds a single
    customer; the histogram of that child (built as the smaller sibling) would be the customer's bin
    in every feature of the feature holder. An honest split leaves at least 4 x min_child_weight
    training rows in each child (hessians are at most 1/4), so the feature holder refuses."""
    from fedrisk.algorithms.vertical.secureboost import label_holder as lh_mod

    params = SecureBoostParams(**FAST)
    n = 300
    rng = np.random.default_rng(5)
    X_h = rng.normal(size=(n, 3))
    own = np.where(np.arange(n) == 7, -100.0, rng.integers(0, 2, n).astype(float))  # row 7 alone in bin 0
    X_lh = np.column_stack([own, rng.normal(size=n)])
    y = (rng.random(n) < 0.3).astype(int)
    honest_split = lh_mod.best_split
    calls = {"n": 0}
    learned = {}

    def evil_split(hist, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:  # the root, the label holder's own features: isolate row 7
            return (1e9, 0, 0, float(hist[0, 0, 0]), float(hist[0, 0, 1]), False)
        return honest_split(hist, *args, **kwargs)

    monkeypatch.setattr(lh_mod, "best_split", evil_split)
    orig_receive = lh_mod.SecureBoostLabelHolder._receive_histograms

    def spy(self, ch, hosts, t, depth, build, by_id):
        orig_receive(self, ch, hosts, t, depth, build, by_id)
        for node in build:
            if len(by_id[node].rows) == 1:
                learned[node] = by_id[node].host_hist["h1"]

    monkeypatch.setattr(lh_mod.SecureBoostLabelHolder, "_receive_histograms", spy)
    with pytest.raises(ProtocolError, match="child of 1 training row"):
        run_roles({"lh": lambda ch: SecureBoostLabelHolder(params).fit(ch, ["h1"], X_lh, y, ["own", "z"]),
                   "h1": lambda ch: SecureBoostFeatureHolder(params).fit(ch, "lh", X_h, ["a", "b", "c"])},
                  recv_timeout=20.0)
    assert not learned, "the label holder received the histogram of a one-customer node"
