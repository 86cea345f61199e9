"""Okamoto-Uchiyama encryption behind the :mod:`fedrisk.crypto.additive` interface.

Scheme (Okamoto & Uchiyama 1998, with fixed-base tables and short DJN-style randomness)::

    key:      n = p^2 q (|p| = |q| = bits/3), g in Z_n with g^(p-1) != 1 mod p^2, g0 random,
              h = g0^n mod n.             public: (n, g, h)    private: p (and q)
    encrypt:  c = g^m * h^r mod n,   r uniform in [0, 2^t)   (t = obfuscation_bits)
    decrypt:  m = L(c^(p-1) mod p^2) / L(g^(p-1) mod p^2) mod p,   L(u) = (u - 1) / p

Plaintexts live in ``Z_p`` but ``p`` is secret, so the public bound is
:attr:`OUPublicKey.plaintext_bits` ``= |p| - 2``: every signed ``m`` with ``|m| < 2^(|p|-2)``
round-trips (negative ``m`` encrypts as ``(g^|m|)^(-1) h^r``, i.e. ``-|m| mod p``; residues above
``p // 2`` decrypt as negative). Sums must stay in that range: :mod:`fedrisk.crypto.packing` sizes
slots against ``plaintext_bits``.

Why: ciphertexts are ``|n|`` bits instead of Paillier's ``2|n|``, so a homomorphic addition is a
2048-bit instead of a 4096-bit modular multiplication (~2.5x faster histograms, half the bytes on
the wire), and decryption is one ``|p|``-bit exponentiation modulo ``p^2`` (~1366 bits).
Encryption uses fixed-base byte-window tables for ``g`` (covering ``plaintext_bits``) and ``h``
(covering ``t``), so its cost grows with the plaintext's bit length.

Security argument:

* Factoring ``n = p^2 q``: the number field sieve does not profit from the square, ECM on a
  683-bit factor is far out of reach, and the lattice attacks on ``p^r q`` need large ``r``; the
  usual estimate is the RSA one for the same modulus size: 2048 bits (|p| ~ 683) ~ 112-bit
  security, 3072 bits (|p| = 1024) ~ 128-bit.
* Semantic security: the p-subgroup assumption of Okamoto-Uchiyama. Taking ``r`` short
  (default ``t = 256``) instead of uniform in ``Z_n`` adds the short-exponent assumption for
  ``<h>`` (a group of unknown order): generic attacks on a ``t``-bit exponent cost ``2^(t/2)``.
  ``obfuscation_bits=bits`` restores the original full-length ``r``.
* Okamoto-Uchiyama is not secure against chosen-ciphertext attacks: decrypting a ciphertext of
  an ``m >= p`` yields ``m mod p``, and revealing that value to the sender factors ``n``. A key
  owner must never send back raw decryptions of ciphertexts a peer chose; protocols reveal only
  derived decisions (SecureBoost: "split on your bin k").
"""
from __future__ import annotations

import secrets
from typing import Any, Sequence

import gmpy2
import numpy as np
from gmpy2 import mpz

from fedrisk.crypto import fixed_point
from fedrisk.crypto.additive import (
    PARALLEL_DECRYPT_AT,
    PARALLEL_ENCRYPT_AT,
    Ciphertexts,
    FixedBaseTable,
    fixed_base_table,
    PrivateKey,
    PublicKey,
    from_bytes,
    map_chunks,
    to_bytes,
    worker_count,
)
from fedrisk.crypto.paillier import DEFAULT_OBFUSCATION_BITS, random_prime, security_bits_for_modulus
from fedrisk.errors import CryptoError

__all__ = ["OUPublicKey", "OUPrivateKey", "generate_keypair"]

_MAX_BITS = 16384
def _table(base: int, modulus: int, bits: int) -> FixedBaseTable:
    return fixed_base_table(base, modulus, bits, window=12)


def _encrypt_kernel(n: int, g: int, h: int, m_bits: int, r_bits: int, plaintexts: Sequence[int]) -> list:
    """``g^m h^r mod n`` for signed ``m`` (already range-checked)."""
    n = mpz(n)
    tg, th = _table(g, n, m_bits), _table(h, n, r_bits)
    inv, rb = gmpy2.invert, secrets.randbits
    out = []
    for m in plaintexts:
        gm = tg.pow(abs(m))
        if m < 0:
            gm = inv(gm, n)
        out.append(th.pow(rb(r_bits), gm))
    return out


def _encrypt_task(n: int, g: int, h: int, m_bits: int, r_bits: int, plaintexts: Sequence[int]) -> bytes:
    return to_bytes(_encrypt_kernel(n, g, h, m_bits, r_bits, plaintexts), (int(n).bit_length() + 7) // 8)


def _decrypt_kernel(p: Any, gp_inv: Any, cts: Sequence[Any]) -> list:
    p2 = p * p
    return [(x - 1) // p * gp_inv % p for x in gmpy2.powmod_base_list(list(cts), p - 1, p2)]


class OUPublicKey(PublicKey):
    """Okamoto-Uchiyama public key ``(n, g, h)``.

    Parameters
    ----------
    n, g, h : int
        Modulus ``p^2 q``, plaintext base and randomness base.
    plaintext_bits : int
        ``|p| - 2``: the signed plaintext capacity (published; ``|p|`` is implied by ``|n|`` anyway).
    obfuscation_bits : int
        Length of the random exponent ``r``.
    """

    scheme = "ou"

    def __init__(self, n: int, g: int, h: int, plaintext_bits: int,
                 obfuscation_bits: int = DEFAULT_OBFUSCATION_BITS) -> None:
        self.n, self.g, self.h = mpz(n), mpz(g), mpz(h)
        self._plaintext_bits = int(plaintext_bits)
        self.obfuscation_bits = int(obfuscation_bits)

    def __repr__(self) -> str:
        return f"OUPublicKey(bits={self.n.bit_length()}, plaintext_bits={self._plaintext_bits})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OUPublicKey) and self.to_wire() == other.to_wire()

    def __hash__(self) -> int:
        return hash((int(self.n), int(self.g), int(self.h)))

    @property
    def ciphertext_modulus(self) -> Any:
        return self.n

    @property
    def plaintext_bits(self) -> int:
        return self._plaintext_bits

    @property
    def security_bits(self) -> int:
        return min(security_bits_for_modulus(self.n.bit_length()), self.obfuscation_bits // 2)

    def encrypt(self, plaintexts: Sequence[int] | np.ndarray) -> Ciphertexts:
        """Encrypt signed integers with ``|m| < 2**plaintext_bits`` (pool for large batches)."""
        vals = plaintexts.tolist() if isinstance(plaintexts, np.ndarray) else plaintexts
        limit = 1 << self._plaintext_bits
        ms = []
        for i, v in enumerate(vals):
            v = int(v)
            if not -limit < v < limit:
                raise CryptoError(f"plaintext at position {i} has {abs(v).bit_length()} bits; this OU key holds "
                                  f"signed values below {self._plaintext_bits} bits")
            ms.append(v)
        common = (int(self.n), int(self.g), int(self.h), self._plaintext_bits, self.obfuscation_bits)
        if len(ms) >= PARALLEL_ENCRYPT_AT and worker_count() > 1:
            w = self.ciphertext_bytes
            return [c for b in map_chunks(_encrypt_task, common, ms) for c in from_bytes(b, w)]
        return _encrypt_kernel(*common, ms)

    def to_wire(self) -> dict:
        return {"scheme": self.scheme, "n": int(self.n), "g": int(self.g), "h": int(self.h),
                "plaintext_bits": self._plaintext_bits, "obfuscation_bits": self.obfuscation_bits}

    @classmethod
    def from_wire(cls, data: dict, *, min_bits: int = 2048) -> "OUPublicKey":
        if not isinstance(data, dict) or data.get("scheme") != cls.scheme:
            raise CryptoError("not an Okamoto-Uchiyama public key (expected a dict with scheme='ou')")
        vals = [data.get(k) for k in ("n", "g", "h", "plaintext_bits", "obfuscation_bits")]
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in vals):
            raise CryptoError("OU public key fields n, g, h, plaintext_bits, obfuscation_bits must be integers")
        n, g, h, pb, t = vals
        if n % 2 == 0 or not min_bits <= n.bit_length() <= _MAX_BITS:
            raise CryptoError(f"OU modulus of {n.bit_length()} bits refused: need an odd modulus of {min_bits}..{_MAX_BITS} bits")
        if not (1 < g < n and 1 < h < n) or gmpy2.gcd(g, n) != 1 or gmpy2.gcd(h, n) != 1:
            raise CryptoError("OU public key has an invalid base g or h")
        if not 16 <= pb <= n.bit_length() // 3 - 1:
            raise CryptoError(f"OU plaintext_bits {pb} impossible for a {n.bit_length()}-bit modulus")
        if not 128 <= t <= n.bit_length():
            raise CryptoError(f"OU obfuscation_bits {t} outside [128, {n.bit_length()}]")
        return cls(n, g, h, pb, t)


class OUPrivateKey(PrivateKey):
    """Okamoto-Uchiyama private key (the primes ``p, q``).

    Parameters
    ----------
    public_key : OUPublicKey
    p, q : int
        ``n == p * p * q``.
    """

    def __init__(self, public_key: OUPublicKey, p: int, q: int) -> None:
        p, q = mpz(p), mpz(q)
        if p * p * q != public_key.n:
            raise CryptoError("the given primes do not match this OU public key (need n = p^2 q)")
        self.public_key = public_key
        self.p, self.q = p, q
        p2 = p * p
        gp = (gmpy2.powmod(public_key.g, p - 1, p2) - 1) // p
        if gp % p == 0:
            raise CryptoError("OU base g has no component of order p; regenerate the key")
        self.gp_inv = gmpy2.invert(gp, p)

    def __repr__(self) -> str:
        return f"OUPrivateKey(bits={self.public_key.n.bit_length()})"

    def decrypt(self, cts: Sequence[Any], *, bound_bits: int | None = None) -> list[int]:
        """Decrypt to signed integers (thread pool for large batches; key stays in-process).

        ``bound_bits`` is accepted for interface compatibility; OU always works modulo ``p``.
        """
        cts = list(cts)
        if len(cts) >= PARALLEL_DECRYPT_AT and worker_count() > 1:
            res = [m for part in map_chunks(_decrypt_kernel, (self.p, self.gp_inv), cts, threads=True) for m in part]
        else:
            res = _decrypt_kernel(self.p, self.gp_inv, cts)
        return fixed_point.from_residues(res, int(self.p))


def public_key_class() -> type[OUPublicKey]:
    """The public-key class (used by :func:`fedrisk.crypto.additive.public_key_from_wire`)."""
    return OUPublicKey


def generate_keypair(bits: int = 2048, *, obfuscation_bits: int = DEFAULT_OBFUSCATION_BITS) -> tuple[OUPublicKey, OUPrivateKey]:
    """Generate an Okamoto-Uchiyama key pair with a ``bits``-bit modulus ``n = p^2 q``.

    Parameters
    ----------
    bits : int
        2048 (|p| = 682, ~112-bit security, 680-bit signed plaintexts) or 3072 (|p| = 1024,
        ~128-bit). Sizes down to 384 are accepted for tests; they are insecure.
    obfuscation_bits : int
        Length of the random exponent ``r`` (>= 128; default 256).
    """
    if not 384 <= bits <= _MAX_BITS:
        raise CryptoError(f"OU key size {bits} must be in [384, {_MAX_BITS}]; use 2048 or 3072")
    if not 128 <= obfuscation_bits <= bits:
        raise CryptoError(f"obfuscation_bits {obfuscation_bits} must lie in [128, {bits}]")
    pbits = bits // 3
    qbits = bits - 2 * pbits
    p = random_prime(pbits)
    while True:
        q = random_prime(qbits)
        n = p * p * q
        if q != p and n.bit_length() == bits:
            break
    p2 = p * p
    while True:
        g = mpz(secrets.randbelow(int(n) - 2) + 2)
        if gmpy2.gcd(g, n) == 1 and gmpy2.powmod(g, p - 1, p2) != 1:
            break
    while True:
        g0 = mpz(secrets.randbelow(int(n) - 2) + 2)
        if gmpy2.gcd(g0, n) == 1:
            break
    h = gmpy2.powmod(g0, n, n)
    pub = OUPublicKey(n, g, h, pbits - 2, obfuscation_bits)
    return pub, OUPrivateKey(pub, p, q)
