"""Okamoto-Uchiyama through the additive interface: round trips, homomorphism, bin sums, wire."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedrisk.crypto import additive, okamoto_uchiyama
from fedrisk.crypto.additive import generate_keypair, public_key_from_wire
from fedrisk.errors import CryptoError
from fedrisk.transport import codec

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def keys():
    return generate_keypair("ou", 768)


def test_keygen_shape(keys):
    pub, priv = keys
    assert pub.n.bit_length() == 768 and priv.p * priv.p * priv.q == pub.n
    assert pub.plaintext_bits == priv.p.bit_length() - 2 == 254
    assert pub.ciphertext_bytes == 96  # |n|, half of Paillier's 2|n|


@SETTINGS
@given(st.lists(st.integers(min_value=-(2**254) + 1, max_value=2**254 - 1), max_size=8))
def test_int_round_trip(keys, ms):
    pub, priv = keys
    assert priv.decrypt(pub.encrypt(ms)) == ms


@SETTINGS
@given(st.lists(st.floats(min_value=-1e9, max_value=1e9, allow_nan=False), min_size=1, max_size=8))
def test_float_round_trip(keys, xs):
    pub, priv = keys
    back = priv.decrypt_floats(pub.encrypt_floats(np.array(xs), 40), 40)
    assert np.all(np.abs(back - np.array(xs)) <= 2.0**-41 + np.abs(xs) * 1e-15)


def test_range_checked_before_encryption(keys):
    pub, _ = keys
    with pytest.raises(CryptoError):
        pub.encrypt([2**254])
    with pytest.raises(CryptoError):
        pub.encrypt([-(2**254)])


def test_homomorphic_identities(keys):
    pub, priv = keys
    a, b = [5, -3, 0, 2**200], [-7, 11, 0, -(2**200)]
    ca, cb = pub.encrypt(a), pub.encrypt(b)
    assert priv.decrypt(pub.add(ca, cb)) == [x + y for x, y in zip(a, b)]
    assert priv.decrypt(pub.sub(ca, cb)) == [x - y for x, y in zip(a, b)]
    assert priv.decrypt([pub.sum(ca)]) == [sum(a)]
    assert priv.decrypt(pub.mul_scalar(ca[:3], [3, -3, 8])) == [15, 9, 0]
    r = pub.rerandomize(ca)
    assert r != ca and priv.decrypt(r) == a


@pytest.mark.parametrize("kernel", ["compiled", "gmpy2"])
def test_bin_sums_many_features(keys, monkeypatch, kernel):
    from fedrisk.crypto import montgomery

    if kernel == "compiled" and not montgomery.AVAILABLE:
        pytest.skip("compiled kernel fedrisk.crypto._montgomery not built")
    if kernel == "gmpy2":
        monkeypatch.setattr(montgomery, "_native", None)
        monkeypatch.setattr(montgomery, "AVAILABLE", False)
    pub, priv = keys
    monkeypatch.setattr(additive, "PARALLEL_HISTOGRAM_AT", 100)
    rng = np.random.default_rng(3)
    x = rng.integers(-(10**6), 10**6, size=150)
    bins = rng.integers(0, 5, size=(150, 3))
    sums = pub.bin_sums(pub.encrypt(x), bins, 5, rows=np.arange(20, 150))
    sel = np.arange(20, 150)
    assert [priv.decrypt(s) for s in sums] == [[int(x[sel][bins[sel, f] == b].sum()) for b in range(5)] for f in range(3)]


def test_pool_encrypt_decrypt(keys, monkeypatch):
    pub, priv = keys
    monkeypatch.setattr(okamoto_uchiyama, "PARALLEL_ENCRYPT_AT", 40)
    monkeypatch.setattr(okamoto_uchiyama, "PARALLEL_DECRYPT_AT", 10)
    x = list(range(-50, 50))
    assert priv.decrypt(pub.encrypt(x)) == x


def test_wire_round_trip(keys):
    pub, priv = keys
    cts = pub.encrypt([4, -4])
    env = codec.decode(codec.encode("j", "a", "b", "he.pk", "public-parameter",
                                    {"pk": pub.to_wire(), "c": pub.ciphertexts_to_wire(cts)}))
    pub2 = public_key_from_wire(env.body["pk"], min_bits=768)
    assert pub2 == pub and isinstance(pub2, okamoto_uchiyama.OUPublicKey)
    assert priv.decrypt(pub2.ciphertexts_from_wire(env.body["c"])) == [4, -4]
    with pytest.raises(CryptoError):
        public_key_from_wire({**pub.to_wire(), "plaintext_bits": 400}, min_bits=768)
    with pytest.raises(CryptoError):
        public_key_from_wire({**pub.to_wire(), "g": 1}, min_bits=768)


def test_2048_security_setting():
    pub, priv = generate_keypair("ou", 2048)
    assert pub.security_bits == 112 and pub.plaintext_bits == 680 and pub.ciphertext_bytes == 256
    assert priv.decrypt(pub.encrypt([-(2**679), 12])) == [-(2**679), 12]
