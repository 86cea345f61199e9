"""Issue 12, item 6: a malicious label holder encrypts ``2^i`` instead of ``y_i`` (documented limit).

Without zero-knowledge range proofs the feature holder cannot tell an encryption of ``2^i`` from
one of 0/1. Each decrypted prebin sum is then a bitmask of the rows in that prebin. The cheap
defence in place (pooling to ``>= need`` rows per sum, :class:`ReleaseRule`) makes the recovered
membership coarse — the pooled prebin, never a single category — but it does not bound *how many
rows* are recovered: one run decodes every row that fits in the plaintext (``plaintext_bits``
rows: ~2,047 with a 2048-bit key, ~1,023 with the 1024-bit test key) for *every* feature of the
feature holder. This test measures exactly that, so ``SECURITY.md``'s numbers stay true; it is
not a regression test of a fix.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from fedrisk.crypto.additive import generate_keypair
from fedrisk.finance.binning import BinningConfig
from fedrisk.algorithms.vertical.woe import ReleaseRule, _prebins, vertical_woe_feature_holder
from fedrisk.runtime.threads import run_roles


def test_crafted_power_of_two_labels_still_decode_pooled_prebins():
    rng = np.random.default_rng(0)
    n = 3000
    X = pd.DataFrame({"income": rng.lognormal(10, 0.6, n), "city": rng.choice([f"c{k}" for k in range(300)], n),
                      "merchant_ref": [f"m{i}" for i in range(n)]})
    pub, priv = generate_keypair("paillier", 1024)
    width = pub.plaintext_bits - 1  # rows whose bit fits below the plaintext bound
    crafted = [1 << i if i < width else 0 for i in range(n)]

    def evil_lh(ch):
        ch.send("fh", "vwoe.key", pub.to_wire(), kind="public-parameter")
        ch.send("fh", "vwoe.labels", pub.ciphertexts_to_wire(priv.encrypt(crafted)), kind="ciphertext")
        sizes = ch.recv("fh", "vwoe.sizes")
        sums = priv.decrypt(pub.ciphertexts_from_wire(ch.recv("fh", "vwoe.sums")))
        ch.send("fh", "vwoe.result", {"features": {f: {"iv": 0.0} for f in sizes["features"]}, "reveal": "iv"},
                kind="metric")
        ch.recv("fh", "vwoe.selection")
        decoded, pos = {}, 0
        for f, k in zip(sizes["features"], sizes["n_prebins"]):
            member = np.full(n, -1)
            for b in range(k + 1):
                mask = sums[pos + b]
                rows = [i for i in range(width) if mask >> i & 1]
                member[rows] = b
            pos += k + 1
            decoded[f] = member
        return decoded

    out = run_roles({"lh": evil_lh,
                     "fh": lambda ch: vertical_woe_feature_holder(ch, "lh", X, min_key_bits=1024, max_corr=None)})
    decoded = out["lh"]
    pre, truth = _prebins(X, list(X.columns), set(), BinningConfig().n_prebins, ReleaseRule())
    need = ReleaseRule().rows_needed(n)
    for j, f in enumerate(X.columns):
        got = decoded[f]
        known = got >= 0
        # the measured limit: every row below the plaintext width, for every feature
        assert known.sum() == width
        assert np.array_equal(got[known], truth[known, j])
        # ... but only the pooled prebin: each holds >= need rows, so a unique column says nothing
        counts = np.bincount(truth[:, j])
        assert counts[counts > 0].min() >= need
    assert pre[2].n_bins == 1  # merchant_ref: one pooled bin, the crafted labels learn nothing from it
