"""Paillier (DJN obfuscation, CRT) through the additive interface: round trips, homomorphism, wire, phe interop."""
from __future__ import annotations

import numpy as np
import phe
import pytest
from gmpy2 import mpz
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedrisk.crypto import additive, paillier
from fedrisk.crypto.additive import generate_keypair, public_key_from_wire
from fedrisk.errors import CryptoError
from fedrisk.transport import codec
from fedrisk.transport.codec import BigInts

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def keys():
    return generate_keypair("paillier", 1024)


@pytest.fixture(scope="module")
def phe_keys(keys):
    pub, priv = keys
    ppub = phe.paillier.PaillierPublicKey(int(pub.n))
    return ppub, phe.paillier.PaillierPrivateKey(ppub, int(priv.p), int(priv.q))


def test_keygen_shape(keys):
    pub, priv = keys
    assert pub.n.bit_length() == 1024 and priv.p * priv.q == pub.n
    assert pub.plaintext_bits == 1022 and pub.ciphertext_bytes == 256
    assert pub.security_bits == 80
    assert priv.p % 4 == 3 and priv.q % 4 == 3  # Blum integer, as DJN assumes
    with pytest.raises(CryptoError):
        generate_keypair("paillier", 1023)
    with pytest.raises(CryptoError):
        generate_keypair("elgamal", 1024)


@SETTINGS
@given(st.lists(st.integers(min_value=-(2**1022) + 1, max_value=2**1022 - 1), max_size=8))
def test_int_round_trip(keys, ms):
    pub, priv = keys
    assert priv.decrypt(pub.encrypt(ms)) == ms
    assert priv.decrypt(priv.encrypt(ms)) == ms  # key-owner CRT path


@SETTINGS
@given(st.lists(st.floats(min_value=-1e12, max_value=1e12, allow_nan=False), min_size=1, max_size=8),
       st.integers(min_value=0, max_value=60))
def test_float_round_trip(keys, xs, precision):
    pub, priv = keys
    back = priv.decrypt_floats(pub.encrypt_floats(np.array(xs), precision), precision)
    assert np.all(np.abs(back - np.array(xs)) <= 2.0 ** -(precision + 1) * 1.0000001 + np.abs(xs) * 1e-15)


def test_extremes_and_range(keys):
    pub, priv = keys
    edge = [0, 1, -1, 2**1022 - 1, -(2**1022) + 1]
    assert priv.decrypt(pub.encrypt(edge)) == edge
    for bad in (2**1022, -(2**1022)):
        with pytest.raises(CryptoError):
            pub.encrypt([bad])
    with pytest.raises(CryptoError):
        pub.encrypt_floats(np.array([1.0, np.nan]))
    with pytest.raises(CryptoError):
        pub.encrypt_floats(np.array([1e300]), 32)  # 1030 bits > 1022
    assert list(priv.decrypt_floats(pub.encrypt_floats(np.array([-0.0, 5e-324, -1.5])), 32)) == [0.0, 0.0, -1.5]


def test_ciphertexts_are_randomised(keys):
    pub, priv = keys
    a, b = pub.encrypt([7, 7])
    assert a != b
    r = pub.rerandomize([a])[0]
    assert r != a and priv.decrypt([r]) == [7]


def test_homomorphic_identities(keys):
    pub, priv = keys
    a, b = [5, -3, 0, 2**900], [-7, 11, 0, 1]
    ca, cb = pub.encrypt(a), pub.encrypt(b)
    assert priv.decrypt(pub.add(ca, cb)) == [x + y for x, y in zip(a, b)]
    assert priv.decrypt(pub.sub(ca, cb)) == [x - y for x, y in zip(a, b)]
    assert priv.decrypt(pub.neg(ca)) == [-x for x in a]
    assert priv.decrypt(pub.add_many([ca, cb, ca])) == [2 * x + y for x, y in zip(a, b)]
    assert priv.decrypt(pub.add_plain(ca, [1, 1, 1, 1])) == [x + 1 for x in a]
    assert priv.decrypt([pub.sum(ca)]) == [sum(a)]
    assert priv.decrypt([pub.sum([])]) == [0]
    assert priv.decrypt(pub.mul_scalar(ca, -4)) == [-4 * x for x in a]
    assert priv.decrypt(pub.mul_scalar(ca, [2, -2, 9, 0])) == [10, 6, 0, 0]
    with pytest.raises(CryptoError):
        pub.add(ca, cb[:2])


@SETTINGS
@given(st.lists(st.tuples(st.floats(-1e6, 1e6), st.floats(-1e6, 1e6)), min_size=1, max_size=6))
def test_float_sums_and_scalar(keys, pairs):
    pub, priv = keys
    x = np.array([p[0] for p in pairs])
    y = np.array([p[1] for p in pairs])
    got = priv.decrypt_floats(pub.add(pub.encrypt_floats(x, 30), pub.encrypt_floats(y, 30)), 30)
    assert np.allclose(got, x + y, atol=2 * 2.0**-30)
    # ciphertext x encoded scalar: precisions add up
    k = pub.mul_scalar(pub.encrypt_floats(x, 20), 3 * 2**10)
    assert np.allclose(priv.decrypt_floats(k, 30), 3 * x, atol=3 * 2.0**-20)


def test_bin_sums(keys):
    pub, priv = keys
    rng = np.random.default_rng(1)
    x = rng.integers(-1000, 1000, size=200)
    bins = rng.integers(0, 6, size=(200, 3))
    cts = pub.encrypt(x)
    sums = pub.bin_sums(cts, bins, 8)
    for f in range(3):
        assert priv.decrypt(sums[f]) == [int(x[bins[:, f] == b].sum()) for b in range(8)]  # bins 6, 7 empty -> 0
    one = pub.bin_sums(cts, bins[:, 1], 8, rows=np.arange(0, 200, 3))
    sel = np.arange(0, 200, 3)
    assert priv.decrypt(one) == [int(x[sel][bins[sel, 1] == b].sum()) for b in range(8)]
    with pytest.raises(CryptoError):
        pub.bin_sums(cts, bins, 5)
    with pytest.raises(CryptoError):
        pub.bin_sums(cts, bins[:10], 8)
    with pytest.raises(CryptoError):
        pub.bin_sums(cts, bins.astype(float), 8)


def test_pool_paths_match_inline(keys, monkeypatch):
    pub, priv = keys
    if additive.worker_count() < 2:
        pytest.skip("one usable core: the pool paths are not taken")
    monkeypatch.setattr(paillier, "PARALLEL_ENCRYPT_AT", 50)
    monkeypatch.setattr(paillier, "PARALLEL_DECRYPT_AT", 10)
    monkeypatch.setattr(additive, "PARALLEL_HISTOGRAM_AT", 100)
    monkeypatch.setattr(additive, "PARALLEL_MUL_AT", 10)
    rng = np.random.default_rng(2)
    x = rng.integers(-(2**40), 2**40, size=120)
    cts = pub.encrypt(x)
    assert priv.decrypt(cts) == x.tolist()
    assert priv.decrypt(priv.encrypt(x)) == x.tolist()
    bins = rng.integers(0, 4, size=(120, 2))
    sums = pub.bin_sums(cts, bins, 4)
    assert [priv.decrypt(s) for s in sums] == [[int(x[bins[:, f] == b].sum()) for b in range(4)] for f in range(2)]
    ks = rng.integers(-5, 5, size=120)
    assert priv.decrypt(pub.mul_scalar(cts, ks)) == (x * ks).tolist()


def test_half_decryption_with_bound(keys):
    pub, priv = keys
    ms = [3, -(2**500), 2**509 - 1]
    cts = pub.encrypt(ms)
    assert priv.decrypt(cts, bound_bits=510) == ms
    assert priv.decrypt(cts, bound_bits=1000) == ms  # bound too large for |p|: full CRT


def test_phe_interop(keys, phe_keys):
    pub, priv = keys
    ppub, ppriv = phe_keys
    ms = [0, 1, 123456789, 2**1000, int(pub.n) - 5]
    ours = pub.encrypt([m if m < int(pub.n) // 2 else m - int(pub.n) for m in ms])
    assert [ppriv.raw_decrypt(int(c)) for c in ours] == ms
    total = sum((phe.EncryptedNumber(ppub, int(c), exponent=0) for c in ours[:3]), phe.EncryptedNumber(ppub, 1, 0))
    assert ppriv.raw_decrypt(total.ciphertext(be_secure=False)) == sum(ms[:3])
    theirs = [ppub.raw_encrypt(m) for m in ms]
    back = priv.decrypt([mpz(c) for c in theirs])
    assert [b % int(pub.n) for b in back] == ms
    enc = ppub.encrypt(-2.5, precision=2**-16)
    assert enc.exponent == -4  # phe's exponent is base 16: 16**-4 == 2**-16
    assert priv.decrypt_floats([mpz(enc.ciphertext())], 16)[0] == -2.5


def test_wire_round_trip(keys):
    pub, priv = keys
    cts = pub.encrypt([1, -2, 3])
    frame = codec.encode("job", "a", "b", "he.pk", "public-parameter",
                        {"pk": pub.to_wire(), "cts": pub.ciphertexts_to_wire(cts)})
    env = codec.decode(frame)
    pub2 = public_key_from_wire(env.body["pk"], min_bits=1024)
    assert pub2 == pub and isinstance(pub2, paillier.PaillierPublicKey)
    back = pub2.ciphertexts_from_wire(env.body["cts"])
    assert env.body["cts"].width == pub.ciphertext_bytes
    assert priv.decrypt(back) == [1, -2, 3]
    with pytest.raises(CryptoError):
        public_key_from_wire(pub.to_wire())  # 1024 < default min_bits 2048
    with pytest.raises(CryptoError):
        public_key_from_wire({**pub.to_wire(), "hs": 0}, min_bits=1024)
    with pytest.raises(CryptoError):
        public_key_from_wire({**pub.to_wire(), "n": "12"}, min_bits=1024)
    with pytest.raises(CryptoError):
        pub.ciphertexts_from_wire(BigInts([1, 2], width=pub.ciphertext_bytes + 1))
    with pytest.raises(CryptoError):
        pub.ciphertexts_from_wire(BigInts([0], width=pub.ciphertext_bytes))
    with pytest.raises(CryptoError):
        pub.ciphertexts_from_wire(BigInts([int(pub.nsquare)], width=pub.ciphertext_bytes))


def test_private_key_checks_factors(keys):
    pub, priv = keys
    with pytest.raises(CryptoError):
        paillier.PaillierPrivateKey(pub, priv.p, priv.q + 2)


def test_2048_bit_key_with_phe():
    pub, priv = generate_keypair("paillier", 2048)
    assert pub.n.bit_length() == 2048 and pub.security_bits == 112 and pub.ciphertext_bytes == 512
    x = np.array([-1.25, 0.0, 3.5e6])
    cts = pub.encrypt_floats(x)
    assert np.array_equal(priv.decrypt_floats(cts), x)
    ppub = phe.paillier.PaillierPublicKey(int(pub.n))
    ppriv = phe.paillier.PaillierPrivateKey(ppub, int(priv.p), int(priv.q))
    assert ppriv.decrypt(phe.EncryptedNumber(ppub, int(cts[2]), exponent=-8)) == 3.5e6  # 16**-8 == 2**-32
