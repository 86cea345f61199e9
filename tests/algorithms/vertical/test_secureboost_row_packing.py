"""Several rows per SecureBoost ciphertext: the same model, masked cross terms, checked announcements."""
from __future__ import annotations

import numpy as np
import pytest

from fedrisk.algorithms.vertical.secureboost import SecureBoostParams
from fedrisk.algorithms.vertical.secureboost.row_packing import RowPacking, choose_rows, max_rows
from fedrisk.crypto.additive import generate_keypair
from fedrisk.crypto.packing import SlotPacking
from fedrisk.errors import CryptoError, ProtocolError
from fedrisk.transport.codec import BigInts

from tests.algorithms.vertical.test_secureboost import make_data, pooled_reference, train

# 2048 bits: the production key size, where 3 rows fit (1024-bit test keys hold 2)
ROWS3 = dict(key_bits=2048, max_bin=16, n_trees=3, max_depth=3)


@pytest.fixture(scope="module")
def keys():
    return generate_keypair("ou", 2048, obfuscation_bits=224)


def _rows(n, seed=0):
    rng = np.random.default_rng(seed)
    g = np.round(rng.uniform(-1, 1, n) * 2**16) / 2**16
    h = np.round(rng.uniform(0, 0.25, n) * 2**16) / 2**16
    return np.column_stack([g, h])


def _sums_by_position(pub, cts, slot_of_row, k, count):
    """What the feature holder computes: per (position, slot) the product of the ciphertexts."""
    m = pub.ciphertext_modulus
    sums = [1] * (k * count)
    for i, t in enumerate(slot_of_row):
        j = (i % k) * count + t
        sums[j] = sums[j] * cts[i // k] % m
    return sums


def _groups(rp, plain, q):
    """Split decrypted plaintexts into their signed row groups (the label holder's view)."""
    R = rp.group_bits
    out = []
    for m in plain:
        m, gs = int(m), []
        for _ in range(rp.groups(q)):
            low = m & ((1 << R) - 1)
            if low >= 1 << (R - 1):
                low -= 1 << R
            gs.append(low)
            m = (m - low) >> R
        out.append(gs)
    return out


@pytest.mark.parametrize("k", [1, 2, 3])
def test_aligned_sums_decode_to_the_bin_sums_for_every_rows_per_ciphertext(keys, k):
    from fedrisk.algorithms.vertical.secureboost.encryption import encrypt_chunk_async

    pub, priv = keys
    n, count = 1001, 11  # a last, partial ciphertext; 11 output slots (not a multiple of q)
    packing = SlotPacking.for_sums((1.0, 0.25), n, plaintext_bits=pub.plaintext_bits, precision=16)
    rp = RowPacking(packing.slot_bits, k, pub.plaintext_bits)
    gh = _rows(n)
    slot_of_row = np.random.default_rng(1).integers(0, count, n)
    cts = pub.ciphertexts_from_wire(encrypt_chunk_async(priv, packing, gh, None, rp)())
    assert len(cts) == -(-n // k)
    got = rp.slot_sums(priv, rp.combine(pub, _sums_by_position(pub, cts, slot_of_row, k, count), count), count, 16)
    want = np.array([gh[slot_of_row == t].sum(axis=0) for t in range(count)])
    assert np.array_equal(got, want)


def test_the_label_holder_reads_no_cross_term_and_would_without_the_masks(keys, monkeypatch):
    """Attack: the label holder decrypts what it received and reads the groups beside each bin sum.
    Unmasked they are the sums of the rows sharing ciphertexts with the bin's rows (per position);
    masked, every one is a fresh ~mask_bits-bit value far from it."""
    pub, priv = keys
    n, count, k = 900, 30, 3
    packing = SlotPacking.for_sums((1.0, 0.25), n, plaintext_bits=pub.plaintext_bits, precision=16)
    rp = RowPacking(packing.slot_bits, k, pub.plaintext_bits)
    gh = _rows(n, seed=2)
    ints = packing.slot_ints(gh)
    slot_of_row = np.random.default_rng(3).integers(0, count, n)
    cts = priv.encrypt(rp.packed(ints))
    sums = _sums_by_position(pub, cts, slot_of_row, k, count)
    q = rp.per_ciphertext
    real = set(rp.real_groups(q).tolist())

    def cross_terms():
        """The true cross terms per (ciphertext, group) that the aligned sum carries."""
        b, out = packing.slot_bits, {}
        for t in range(count):
            for s in range(k):
                rows = np.flatnonzero((slot_of_row == t) & (np.arange(n) % k == s))
                for s2 in range(k):
                    if s2 == s:
                        continue
                    partners = rows - s + s2
                    partners = partners[partners < n]
                    v = ints[partners].sum(axis=0)
                    grp = (t % q) * k + k - 1 - s + s2
                    key = (t // q, grp)
                    out[key] = out.get(key, 0) + int(v[0]) + (int(v[1]) << b)
        return out

    truth = cross_terms()

    def received(combined):
        return _groups(rp, priv.decrypt(combined, bound_bits=rp.groups(q) * rp.group_bits), q)

    # without the masks, the attack reads every cross term exactly
    monkeypatch.setattr(RowPacking, "_encrypted_masks", lambda self, key, n_ct, q: key.encrypt([0] * n_ct))
    leaked = received(rp.combine(pub, sums, count))
    assert all(leaked[c][g] == v for (c, g), v in truth.items())
    monkeypatch.undo()
    # with them: nothing near the true value, every cross group a full-width uniform draw
    seen = received(rp.combine(pub, sums, count))
    cross = [(seen[c][g], truth.get((c, g), 0)) for c in range(len(seen)) for g in range(rp.groups(q)) if g not in real]
    assert cross and all(abs(v - t) > 2 ** (rp.mask_bits - 16) for v, t in cross)
    tops = np.array([(v >> (rp.mask_bits - 1)) & 1 for v, _ in cross])
    assert 0.3 < tops.mean() < 0.7  # the masks' top bit is a fair coin, not a sign extension
    # and the bin sums themselves are unchanged
    assert np.array_equal(rp.slot_sums(priv, rp.combine(pub, sums, count), count, 16),
                          np.array([gh[slot_of_row == t].sum(axis=0) for t in range(count)]))


@pytest.mark.parametrize("extra", [{}, {"subsample": 0.7}])
def test_three_rows_per_ciphertext_learn_the_one_row_model_bit_for_bit(extra):
    X, y = make_data(n=700, seed=5)
    parts = [X[:, :3], X[:, 3:6], X[:, 6:]]
    one, _ = train(parts, y, SecureBoostParams(**{**ROWS3, **extra, "rows_per_ciphertext": 1}))
    three, net = train(parts, y, SecureBoostParams(**{**ROWS3, **extra, "rows_per_ciphertext": 3}), capture=True)
    assert np.array_equal(one["lh"][0].train_margin_, three["lh"][0].train_margin_)
    assert one["lh"][0].model_.trees == three["lh"][0].model_.trees
    for h in ("h1", "h2"):
        assert one[h].model_.trees == three[h].model_.trees
    if not extra:
        params = SecureBoostParams(**{**ROWS3, "rows_per_ciphertext": 3})
        assert np.max(np.abs(three["lh"][1] - pooled_reference(parts, y, params))) < 1e-6
    # a third of the ciphertexts: one per three rows and tree
    sent = sum(len(v) for e in net["h1"].captured if e.kind == "ciphertext" for v in _walk(e.body)
               if isinstance(v, BigInts))
    rows_per_tree = 700 if not extra else int(round(0.7 * 700))
    assert sent == ROWS3["n_trees"] * -(-rows_per_tree // 3)


def test_the_feature_holder_refuses_rows_per_ciphertext_its_key_cannot_hold():
    from fedrisk.algorithms.vertical.secureboost.feature_holder import _announced_rows

    pub, _ = generate_keypair("ou", 1024, obfuscation_bits=128)
    packing = SlotPacking.for_sums((1.0, 0.25), 500, plaintext_bits=pub.plaintext_bits, precision=16)
    top = max_rows(packing.slot_bits, pub.plaintext_bits)
    auto, fixed = SecureBoostParams(key_bits=1024), SecureBoostParams(key_bits=1024, rows_per_ciphertext=1)
    assert _announced_rows({"rows_per_ciphertext": top}, auto, packing, pub, "lh").rows == top
    assert _announced_rows({}, auto, packing, pub, "lh").rows == 1
    for bad, params in ((top + 1, auto), (0, auto), ("3", auto), (True, auto), (top, fixed)):
        with pytest.raises(ProtocolError, match="rows per ciphertext"):
            _announced_rows({"rows_per_ciphertext": bad}, params, packing, pub, "lh")


def test_small_jobs_keep_one_row_and_large_ones_pack_three():
    bits, plain = 36, 680  # (g, h) slots for 285k rows; a 2048-bit OU key
    assert max_rows(bits, plain) == 3
    assert choose_rows(bits, plain, 24_000, 157, 4) == 1  # the example: overhead per bin sum outweighs
    assert choose_rows(bits, plain, 285_000, 157, 4) == 3
    assert choose_rows(bits, plain, 285_000, 157, 4, requested=2) == 2
    with pytest.raises(CryptoError, match="does not fit"):
        choose_rows(bits, plain, 285_000, 157, 4, requested=4)


def _walk(x):
    if isinstance(x, dict):
        for v in x.values():
            yield from _walk(v)
    elif isinstance(x, (list, tuple)):
        for v in x:
            yield from _walk(v)
    else:
        yield x
