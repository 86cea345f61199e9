"""SecureBoost resume hooks (per-role package): a job continued from both parties' checkpoints
after tree k builds the trees the uninterrupted job builds (row schedule replayed, JSON round trip)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from fedrisk.algorithms.vertical.secureboost import SecureBoostFeatureHolder, SecureBoostLabelHolder, SecureBoostParams
from fedrisk.runtime.checkpoint import _decode, _encode
from fedrisk.runtime.threads import run_roles
from fedrisk.transport.channel import InMemoryNetwork

# subsample + validation split: the resumed run must replay the seed's row draws for the trees it skips
PARAMS = dict(key_bits=1024, max_bin=16, n_trees=4, max_depth=2, subsample=0.8, validation_fraction=0.1)


def _data(n=500, seed=1):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5))
    y = (rng.random(n) < 1 / (1 + np.exp(-(X[:, 0] - X[:, 3] + 0.7 * X[:, 4])))).astype(float)
    return X[:, :2], X[:, 2:], y


def _fit(starts=None, rows=0):
    """Both roles; returns their estimators and every checkpoint written (as stored: JSON text)."""
    XL, XF, y = _data()
    params = SecureBoostParams(**PARAMS, rows_per_ciphertext=rows)
    saved: dict[str, dict[int, str]] = {"lh": {}, "fh": {}}
    starts = starts or {}

    def saver(who):
        return lambda step, state: saved[who].__setitem__(step, json.dumps(state, default=_encode))

    def lh(ch):
        return SecureBoostLabelHolder(params).fit(ch, ["fh"], XL, y, ["a", "b"], start=starts.get("lh"),
                                                  checkpoint=saver("lh"))

    def fh(ch):
        return SecureBoostFeatureHolder(params).fit(ch, "lh", XF, ["c", "d", "e"], start=starts.get("fh"),
                                                    checkpoint=saver("fh"))

    res = run_roles({"lh": lh, "fh": fh}, network=InMemoryNetwork(["lh", "fh"]))
    return res, saved


@pytest.mark.parametrize("rows", [0, 2])  # 2: two rows per ciphertext (all a 1024-bit test key holds)
def test_a_resumed_job_builds_the_uninterrupted_jobs_trees(rows):
    ref, saved = _fit(rows=rows)
    # the feature holder checkpoints tree k when it starts tree k + 1; both have step 2
    assert 2 in saved["lh"] and 2 in saved["fh"]
    starts = {who: _decode(json.loads(saved[who][2])) for who in ("lh", "fh")}
    assert starts["lh"]["t"] == starts["fh"]["t"] == 2
    res, _ = _fit(starts, rows=rows)
    a, b = ref["lh"], res["lh"]
    assert np.array_equal(a.train_margin_, b.train_margin_)
    assert a.model_.history == b.model_.history
    assert json.dumps(a.model_.trees, default=_encode) == json.dumps(b.model_.trees, default=_encode)
    assert json.dumps(ref["fh"].model_.trees, default=_encode) == json.dumps(res["fh"].model_.trees, default=_encode)
