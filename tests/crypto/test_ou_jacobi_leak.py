"""Attack: the Jacobi symbol of an Okamoto-Uchiyama ciphertext must not show the plaintext's parity.

Anyone holding the public key can compute ``(c / n)``. With ``h = g0^n`` drawn apart from ``g``,
``(c / n) = (g / n)^m (h / n)^r``; before key generation fixed ``(g / n) = +1``, a quarter of keys
(``(g / n) = -1``, ``(h / n) = +1``) gave ``(c / n) = (-1)^m``: a feature holder read every label
a label holder encrypted alone. These tests run that attack on freshly generated keys.
"""
from __future__ import annotations

import gmpy2
import numpy as np
import pytest

from fedrisk.crypto import montgomery
from fedrisk.crypto.additive import from_bytes, generate_keypair

KEYS = 16  # before the fix each key leaked with probability 1/4: all 16 safe by chance ~1 %


def _symbols(pub, cts) -> np.ndarray:
    n = int(pub.n)
    return np.array([int(gmpy2.jacobi(int(c), n)) for c in cts])


def test_generated_g_has_jacobi_symbol_one():
    for _ in range(KEYS):  # each key passed before the fix with probability 1/2
        pub, priv = generate_keypair("ou", 384)
        assert gmpy2.jacobi(int(pub.g), int(pub.n)) == 1
        assert priv.decrypt(pub.encrypt([1, 0, 7])) == [1, 0, 7]


def test_ciphertext_symbols_do_not_reveal_plaintext_parity():
    rng = np.random.default_rng(0)
    m = rng.integers(0, 2, size=400)
    for _ in range(KEYS):
        pub, _ = generate_keypair("ou", 384)
        sym = _symbols(pub, pub.encrypt(m.tolist()))
        # the attacker's guess "odd iff the symbol is -1" must do no better than chance
        gap = abs(np.mean(sym[m == 1] == -1) - np.mean(sym[m == 0] == -1))
        assert gap < 0.2, f"ciphertext symbols separate odd from even plaintexts (gap {gap:.2f})"


@pytest.mark.skipif(not montgomery.AVAILABLE, reason="compiled kernel fedrisk.crypto._montgomery not built")
def test_owner_side_ciphertext_symbols_do_not_reveal_plaintext_parity():
    """The key owner's own path (``gamma^m h^r`` through CRT, SecureBoost's gradients): its symbol
    is that of ``h^r`` whatever ``m``."""
    rng = np.random.default_rng(1)
    m = rng.integers(0, 2, size=400)
    for _ in range(KEYS // 4):
        pub, priv = generate_keypair("ou", 384)
        ct = priv.encrypt_slots_to_wire_async(m.reshape(-1, 1), 8, (1,))()
        assert priv.decrypt(from_bytes(ct.to_bytes(), ct.width)) == m.tolist()
        sym = _symbols(pub, from_bytes(ct.to_bytes(), ct.width))
        gap = abs(np.mean(sym[m == 1] == -1) - np.mean(sym[m == 0] == -1))
        assert gap < 0.2, f"owner ciphertext symbols separate odd from even plaintexts (gap {gap:.2f})"
