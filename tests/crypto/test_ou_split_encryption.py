"""OU encryption split into data-independent obfuscators and the g^m part; ciphertext blocks on the wire."""
from __future__ import annotations

import gmpy2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedrisk.crypto import additive, montgomery
from fedrisk.crypto import okamoto_uchiyama as ou
from fedrisk.crypto.additive import from_bytes, generate_keypair
from fedrisk.crypto.packing import SlotPacking
from fedrisk.errors import CryptoError
from fedrisk.transport.codec import BigInts, decode, encode


@pytest.fixture(scope="module")
def keys():
    return generate_keypair("ou", 1024, obfuscation_bits=160)


def _gh(n, seed=0):
    rng = np.random.default_rng(seed)
    gh = np.column_stack([rng.uniform(-1, 1, n), rng.uniform(0, 0.25, n)])
    gh[:4] = [[-1, 0], [1, 0.25], [0, 0], [-1, 0.25]]
    return gh


def test_slot_encryption_equals_packed_encryption_with_same_obfuscators(keys):
    pub, priv = keys
    pk = SlotPacking.for_sums((1.0, 0.25), 5000, plaintext_bits=pub.plaintext_bits, precision=16)
    gh = _gh(300)
    sv = pk.slot_ints(gh)
    assert [int(a) + (int(b) << pk.slot_bits) for a, b in sv] == pk.pack(gh)
    obf = ou._obfuscator_task(int(pub.n), int(pub.h), pub.obfuscation_bits, len(gh))
    a = pub.encrypt_slots_to_wire_async(sv, pk.slot_bits, pk.slot_bounds, obf)()
    b = pub.encrypt_to_wire_async(pk.pack(gh), obf)()
    assert a == b
    dec = pk.unpack(priv.decrypt(from_bytes(a.to_bytes(), a.width)))
    assert np.abs(dec - gh).max() <= 2.0 ** -17


def test_fresh_obfuscators_are_distinct_and_decrypt(keys):
    pub, priv = keys
    w = pub.ciphertext_bytes
    blob = b"".join(f() for f in pub.obfuscators_async(64, tasks=1))
    rs = from_bytes(blob, w)
    assert len(rs) == len(set(int(r) for r in rs)) == 64
    # an obfuscator is an encryption of zero
    assert priv.decrypt(rs) == [0] * 64
    # fresh randomness without obfuscators: two encryptions of the same values differ
    x = pub.encrypt_to_wire([5, 5])
    assert x.values[0] != x.values[1]
    assert priv.decrypt(from_bytes(x.to_bytes(), w)) == [5, 5]


def test_obfuscator_count_and_slot_bounds_checked(keys):
    pub, _ = keys
    pk = SlotPacking.for_sums((1.0, 0.25), 5000, plaintext_bits=pub.plaintext_bits, precision=16)
    sv = pk.slot_ints(_gh(10))
    with pytest.raises(CryptoError):
        pub.encrypt_slots_to_wire_async(sv, pk.slot_bits, pk.slot_bounds, b"\x01" * pub.ciphertext_bytes)
    bad = sv.copy()
    bad[0, 0] = pk.slot_bounds[0] + 1
    with pytest.raises(CryptoError):
        pub.encrypt_slots_to_wire_async(bad, pk.slot_bits, pk.slot_bounds)
    with pytest.raises(CryptoError):
        pk.slot_ints([[2.0, 0.0]])


def test_random_digits_are_in_range(keys):
    pub, _ = keys
    t = ou._table(pub.h, pub.n, 160, 14)
    d = t.random_digits(2000, 160)
    assert d.shape == (2000, 12)
    assert d.min() >= 0 and d[:, :-1].max() < 2**14 and d[:, -1].max() < 2 ** (160 - 11 * 14)
    # every digit position is used (not a constant)
    assert (d.std(axis=0) > 0).all()


def test_ciphertext_block_validation_and_lazy_bigints(keys):
    pub, _ = keys
    w = pub.ciphertext_bytes
    cts = pub.encrypt([1, 2, 3])
    wire = pub.ciphertexts_to_wire(cts)
    back = decode(encode("j", "a", "b", "t", "ciphertext", {"cts": wire}), job="j", to="b", senders={"a"}).body["cts"]
    assert isinstance(back, BigInts) and back == wire
    assert pub.ciphertext_block_from_wire(back) == b"".join(int(c).to_bytes(w, "big") for c in cts)
    assert pub.ciphertexts_from_wire(back) == cts
    for bad in (0, int(pub.n), int(pub.n) + 5):
        with pytest.raises(CryptoError):
            pub.ciphertext_block_from_wire(BigInts([1, bad], width=w))


# --- the key owner's CRT path (compiled kernel) -------------------------------------------------
needs_kernel = pytest.mark.skipif(not montgomery.AVAILABLE, reason="compiled kernel fedrisk.crypto._montgomery not built")


@needs_kernel
@pytest.mark.parametrize("announced", [0, ou._CrtEncryptor.WIDE_AT])
def test_owner_crt_obfuscators_are_h_to_the_r(keys, announced):
    pub, priv = keys
    crt = ou._CrtEncryptor(pub, priv.p, priv.q)
    # a large job's announcement switches to the wide window (before the tables exist)
    assert crt.expect(announced) == (crt.WIDE_WINDOW if announced else crt.WINDOW) == crt.window
    digits = additive.random_exponent_digits(40, pub.obfuscation_bits, crt.window)
    digits[0] = 0                                   # r = 0: the obfuscator is 1
    digits[1] = (1 << crt.window) - 1               # every digit at its largest
    blob = crt.obfuscators(40, digits)
    ow, w1 = crt.obfuscator_bytes, crt.w1
    assert crt.expect(0 if announced else crt.WIDE_AT) == crt.window  # fixed once the tables exist
    for i, row in enumerate(digits.tolist()):
        r = sum(int(d) << (crt.window * j) for j, d in enumerate(row))
        expect = gmpy2.powmod(pub.h, r, pub.n)
        a = int.from_bytes(blob[i * ow:i * ow + w1], "big")
        b = int.from_bytes(blob[i * ow + w1:(i + 1) * ow], "big")
        assert a == expect % crt.p2 and b == expect % crt.q


@needs_kernel
def test_owner_crt_encryption_is_gamma_to_the_m_times_h_to_the_r(keys):
    """The owner's ciphertext for ``r`` is ``gamma^m h^r``: ``h^r`` modulo ``q``, ``h^r`` times an
    element of order ``p`` modulo ``p^2``; it differs from the public ``g^m h^r`` by ``delta^-m``
    (``g``'s non-``p`` part), which decryption removes: both decrypt to ``m``."""
    pub, priv = keys
    crt = ou._CrtEncryptor(pub, priv.p, priv.q)
    pk = SlotPacking.for_sums((1.0, 0.25), 5000, plaintext_bits=pub.plaintext_bits, precision=16)
    gh = _gh(200, seed=4)
    sv = pk.slot_ints(gh)
    digits = additive.random_exponent_digits(len(gh), pub.obfuscation_bits, crt.window)
    blob = crt.encrypt_slots(sv, pk.slot_bits, tuple(pk.slot_bounds), crt.obfuscators(len(gh), digits))
    mine = from_bytes(blob, pub.ciphertext_bytes)
    rs = [gmpy2.powmod(pub.h, sum(int(d) << (crt.window * j) for j, d in enumerate(row)), pub.n)
          for row in digits.tolist()]
    public = pub.encrypt_slots_to_wire_async(sv, pk.slot_bits, pk.slot_bounds, additive.to_bytes(rs, pub.ciphertext_bytes))()
    ms = pk.pack(gh)
    p, q, p2 = priv.p, priv.q, priv.p * priv.p
    for c, r, m in zip(mine, rs, ms):
        assert c % q == r % q
        shift = c * gmpy2.invert(r, p2) % p2
        assert shift % p == 1                                   # in the subgroup of order p
        assert shift == (1 + p * (-m * crt.gp % p)) % p2         # (1 + p)^(-m gp) = gamma^m
    assert priv.decrypt(mine) == priv.decrypt(from_bytes(public.to_bytes(), public.width)) == ms
    assert [int(c) for c in mine] != [int(c) for c in from_bytes(public.to_bytes(), public.width)]
    # sums across the two forms (the feature holders' masks are public-path ciphertexts) add up
    both = [a * b % pub.n for a, b in zip(mine, from_bytes(public.to_bytes(), public.width))]
    assert priv.decrypt(both) == [2 * m for m in ms]


@needs_kernel
@pytest.mark.parametrize("native", [True, False])
def test_p_subgroup_shift_equals_its_definition(keys, monkeypatch, native):
    from fedrisk.crypto import montgomery as mt

    if not native:
        monkeypatch.setattr(mt, "_native", None)
    _, priv = keys
    p, p2 = int(priv.p), int(priv.p) ** 2
    rng = np.random.default_rng(3)
    consts = [int(x) % p for x in (rng.integers(1, 2**62, 3).tolist())] + [p - 1, 0]
    v = rng.integers(-(2**61), 2**61, size=(30, 5))
    v[0] = 0
    v[1] = [2**62 - 1, -(2**62 - 1), 1, -1, 5]
    xs = [int(rng.integers(1, 2**62)) ** 20 % p2 for _ in range(29)] + [p2 - 1]
    out = from_bytes(mt.p_subgroup_shift(p, consts, v, additive.to_bytes(xs, mt.width_of(p2))), mt.width_of(p2))
    for o, x, row in zip(out, xs, v.tolist()):
        z = sum(a * c for a, c in zip(row, consts)) % p
        assert int(o) == x * (1 + p * z) % p2
    with pytest.raises(CryptoError):
        mt.p_subgroup_shift(p, [p], v[:1, :1], additive.to_bytes(xs[:1], mt.width_of(p2)))
    with pytest.raises(CryptoError):
        mt.p_subgroup_shift(p, consts, v[:2], additive.to_bytes(xs[:1], mt.width_of(p2)))
    with pytest.raises(CryptoError):
        mt.p_subgroup_shift(p, consts[:1], np.array([[2**62]]), additive.to_bytes(xs[:1], mt.width_of(p2)))
    with pytest.raises(CryptoError):
        mt.p_subgroup_shift(p, consts[:1], np.array([[1]]), additive.to_bytes([p2], mt.width_of(p2)))


@needs_kernel
def test_owner_encryption_through_the_private_key_decrypts_and_is_fresh(keys):
    pub, priv = keys
    pk = SlotPacking.for_sums((1.0, 0.25), 5000, plaintext_bits=pub.plaintext_bits, precision=16)
    gh = _gh(3000, seed=5)
    sv = pk.slot_ints(gh)
    obf = b"".join(f() for f in priv.obfuscators_async(len(gh), tasks=3))
    assert len(obf) == len(gh) * priv.obfuscator_bytes
    a = priv.encrypt_slots_to_wire_async(sv, pk.slot_bits, pk.slot_bounds, obf)()
    b = priv.encrypt_slots_to_wire_async(sv, pk.slot_bits, pk.slot_bounds)()   # fresh obfuscators
    assert a.width == pub.ciphertext_bytes and a.to_bytes() != b.to_bytes()
    for ct in (a, b):
        dec = pk.unpack(priv.decrypt(from_bytes(ct.to_bytes(), ct.width)))
        assert np.abs(dec - gh).max() <= 2.0 ** -17
    with pytest.raises(CryptoError):  # the obfuscators of a public key are not this key's CRT form
        priv.encrypt_slots_to_wire_async(sv[:2], pk.slot_bits, pk.slot_bounds, b"\x01" * pub.ciphertext_bytes * 2)


def test_owner_encryption_without_the_kernel_uses_the_public_path(keys, monkeypatch):
    pub, priv = keys
    monkeypatch.setattr(montgomery, "AVAILABLE", False)
    assert priv.obfuscator_bytes == pub.ciphertext_bytes
    pk = SlotPacking.for_sums((1.0, 0.25), 5000, plaintext_bits=pub.plaintext_bits, precision=16)
    gh = _gh(50, seed=6)
    obf = b"".join(f() for f in priv.obfuscators_async(len(gh), tasks=1))
    ct = priv.encrypt_slots_to_wire_async(pk.slot_ints(gh), pk.slot_bits, pk.slot_bounds, obf)()
    assert np.abs(pk.unpack(priv.decrypt(from_bytes(ct.to_bytes(), ct.width))) - gh).max() <= 2.0 ** -17


@given(st.integers(1, 6), st.sampled_from([8, 16, 32]), st.integers(1, 8), st.data())
@settings(max_examples=60, deadline=None)
def test_whole_byte_exponent_digits_equal_the_bit_split(count, window, n_dig, data):
    """The fast path for 8/16/32-bit windows reads the same digits as unpacking the bits."""
    bits = window * n_dig
    raw = data.draw(st.binary(min_size=count * bits // 8, max_size=count * bits // 8))
    fast = additive.exponent_digits(raw, count, bits, window)
    # the generic path on the same bytes: window + 1 bits per digit would differ, so split by hand
    ints = [int.from_bytes(raw[i * bits // 8:(i + 1) * bits // 8], "little") for i in range(count)]
    want = [[(x >> (window * j)) & ((1 << window) - 1) for j in range(n_dig)] for x in ints]
    assert fast.dtype == np.int64 and fast.tolist() == want
    # and the bit-unpacking path (a window that is not whole bytes) agrees on the same exponents
    slow = additive.exponent_digits(raw, count, bits, 1)
    assert [sum(int(b) << j for j, b in enumerate(row)) for row in slow.tolist()] == ints
