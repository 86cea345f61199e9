"""Paillier encryption (g = n + 1) with DJN fixed-base obfuscation, CRT decryption and batch kernels.

Scheme (Paillier 1999, with the Damgard-Jurik-Nielsen 2010 obfuscation)::

    key:      n = p q (|p| = |q| = bits/2, random primes from `secrets`), x random in Z_n^*,
              h = -x^2 mod n, hs = h^n mod n^2.        public: (n, hs)   private: (p, q)
    encrypt:  c = (1 + n m) * hs^a mod n^2,   a uniform in [0, 2^t)  (t = obfuscation_bits)
    decrypt:  m_p = L_p(c^(p-1) mod p^2) * h_p mod p,  m_q likewise,  m = CRT(m_p, m_q)
              with L_p(u) = (u - 1) / p and h_p = L_p((1 + n)^(p-1) mod p^2)^(-1) mod p.

``(1 + n)^m = 1 + n m mod n^2`` makes the message part free; the cost is the obfuscator. Standard
Paillier draws ``r`` in ``Z_n^*`` and computes ``r^n mod n^2`` (a 2048-bit exponentiation modulo a
4096-bit number, ~90/s per core). DJN instead fixes ``hs`` and raises it to a short random ``a``
through a precomputed byte-window table (:class:`~fedrisk.crypto.additive.FixedBaseTable`): 32
modular multiplications for ``t = 256``, ~20-50x faster.

Security argument (documented so a reviewer can check it):

* Ciphertexts are standard Paillier ciphertexts: ``hs^a = (h^a)^n`` is an ``n``-th residue, so any
  Paillier implementation with ``g = n + 1`` decrypts them (tested against ``phe``), and
  homomorphic operations are unchanged.
* Semantic security rests on the decisional composite residuosity (DCR) assumption, as for
  Paillier, plus DJN's assumption that ``h^a`` for short random ``a`` is indistinguishable from a
  random element of ``<h>``. As in DJN, ``p = q = 3 (mod 4)`` (Blum integer), so ``-1`` is a
  non-square of Jacobi symbol +1 and ``h = -x^2`` generates, except with negligible probability,
  a subgroup of small index in the Jacobi-symbol-1 group, of unknown order (computing it is as
  hard as factoring ``n``). DJN take ``|a| ~ |n|/2``; we take
  ``t = 2 * 128 = 256`` bits by default: the best known attacks on a short exponent
  (Pollard's kangaroo / baby-step giant-step) cost ``2^(t/2) = 2^128`` group operations, which
  matches the 112-bit (2048) and 128-bit (3072) strength of the modulus (the short-exponent
  discrete-log argument of van Oorschot-Wiener 1996 and Koshiba-Kurosawa 2004). Setting
  ``obfuscation_bits=bits // 2`` gives the DJN paper's parameters at ~5x the cost.
* Security levels of the modulus (NIST SP 800-57 Part 1, factoring): 1024 -> 80 bits (tests
  only), 2048 -> 112 bits, 3072 -> 128 bits.
* The key owner encrypts through CRT (:meth:`PaillierPrivateKey.encrypt`): ``hs^a`` is computed
  modulo ``p^2`` and ``q^2`` with half-size tables and recombined, giving bit-identical
  ciphertext distributions; the factors are passed to the party's own local worker processes.

Signed plaintexts: ``m`` is encoded as ``m mod n`` and residues above ``n // 2`` decrypt as
negative; :attr:`PaillierPublicKey.plaintext_bits` is ``|n| - 2`` so every ``|m| < 2^(|n|-2)``
round-trips. :meth:`PaillierPrivateKey.decrypt` with ``bound_bits <= |p| - 2`` decrypts modulo
``p`` only (half the work) — correct whenever the caller's bound holds (e.g. packed values whose
layout fits in ``|p| - 2`` bits); a ciphertext of a larger value then decrypts to garbage rather
than to an error, so only pass a bound you can guarantee.
"""
from __future__ import annotations

import secrets
from typing import Any, Sequence

import gmpy2
import numpy as np
from gmpy2 import mpz

from fedrisk.crypto import fixed_point, montgomery
from fedrisk.crypto.additive import (
    PARALLEL_DECRYPT_AT,
    PARALLEL_ENCRYPT_AT,
    Ciphertexts,
    FixedBaseTable,
    fixed_base_table,
    PrivateKey,
    PublicKey,
    decrypt_in_threads,
    from_bytes,
    map_chunks,
    to_bytes,
    worker_count,
)
from fedrisk.errors import CryptoError

__all__ = [
    "PaillierPublicKey",
    "PaillierPrivateKey",
    "generate_keypair",
    "random_prime",
    "security_bits_for_modulus",
    "DEFAULT_OBFUSCATION_BITS",
]

#: Bits of the DJN exponent ``a``: 2 x 128-bit security (see the module docstring).
DEFAULT_OBFUSCATION_BITS = 256

_MAX_BITS = 16384


def security_bits_for_modulus(bits: int) -> int:
    """Classical security of a factoring-based modulus of ``bits`` bits (NIST SP 800-57 table)."""
    for size, level in ((15360, 256), (7680, 192), (3072, 128), (2048, 112), (1024, 80)):
        if bits >= size:
            return level
    return 0


def random_prime(bits: int) -> Any:
    """A uniformly chosen ``bits``-bit prime ``= 3 (mod 4)`` with its top two bits set.

    Candidates come from :mod:`secrets` and are tested with gmpy2's BPSW + Miller-Rabin. Top two
    bits set make a product of two such primes exactly ``2 * bits`` bits long; ``3 (mod 4)``
    makes ``p q`` a Blum integer, as DJN obfuscation assumes.
    """
    if bits < 16:
        raise CryptoError(f"prime size {bits} bits is too small")
    top = mpz(3) << (bits - 2)
    while True:
        cand = mpz(secrets.randbits(bits)) | top | 3
        if gmpy2.is_prime(cand, 40):
            return cand


# ---------------------------------------------------------------------------------------------
# Kernels (pure functions over ints; also run in pool workers)
# ---------------------------------------------------------------------------------------------
def _table(base: int, modulus: int, bits: int) -> FixedBaseTable:
    return fixed_base_table(base, modulus, bits, window=8)


def _encrypt_kernel(n: int, hs: int, bits: int, residues: Sequence[int]) -> list:
    n = mpz(n)
    table = _table(hs, n * n, bits)
    pw, rb = table.pow, secrets.randbits
    return [pw(rb(bits), n * m + 1) for m in residues]


def _encrypt_task(n: int, hs: int, bits: int, residues: Sequence[int]) -> bytes:
    w = (int(n).bit_length() * 2 + 7) // 8
    return to_bytes(_encrypt_kernel(n, hs, bits, residues), w)


def _encrypt_crt_kernel(p: int, q: int, hs: int, bits: int, residues: Sequence[int]) -> list:
    p, q = mpz(p), mpz(q)
    n = p * q
    p2, q2 = p * p, q * q
    tp, tq = _table(hs % p2, p2, bits), _table(hs % q2, q2, bits)
    p2_inv = gmpy2.invert(p2, q2)
    out = []
    for m in residues:
        a = secrets.randbits(bits)
        nude = n * m + 1
        cp = tp.pow(a, nude % p2)
        cq = tq.pow(a, nude % q2)
        out.append(cp + p2 * ((cq - cp) * p2_inv % q2))
    return out


def _encrypt_crt_task(p: int, q: int, hs: int, bits: int, residues: Sequence[int]) -> bytes:
    w = ((int(p) * int(q)).bit_length() * 2 + 7) // 8
    return to_bytes(_encrypt_crt_kernel(p, q, hs, bits, residues), w)


def _decrypt_kernel(p: Any, q: Any, hp: Any, hq: Any, q_inv_p: Any, half_only: bool, cts: Sequence[Any]) -> list:
    """Residues ``m mod n`` (or ``m mod p`` when ``half_only``); the exponentiations release the GIL
    (compiled kernel; partly with gmpy2), so batches split over threads."""
    cts = list(cts)
    mp = [(x - 1) // p * hp % p for x in montgomery.powmod_list(cts, int(p - 1), int(p * p))]
    if half_only:
        return mp
    mq = [(x - 1) // q * hq % q for x in montgomery.powmod_list(cts, int(q - 1), int(q * q))]
    return [b + q * ((a - b) * q_inv_p % p) for a, b in zip(mp, mq)]


# ---------------------------------------------------------------------------------------------
# Keys
# ---------------------------------------------------------------------------------------------
class PaillierPublicKey(PublicKey):
    """Paillier public key ``(n, hs)``; see the module docstring for the scheme and its security.

    Parameters
    ----------
    n : int
        Modulus ``p q``.
    hs : int
        DJN obfuscation base ``h^n mod n^2``.
    obfuscation_bits : int
        Length ``t`` of the random exponent ``a``.
    """

    scheme = "paillier"

    def __init__(self, n: int, hs: int, obfuscation_bits: int = DEFAULT_OBFUSCATION_BITS) -> None:
        self.n = mpz(n)
        self.nsquare = self.n * self.n
        self.hs = mpz(hs)
        self.obfuscation_bits = int(obfuscation_bits)

    def __repr__(self) -> str:
        return f"PaillierPublicKey(bits={self.n.bit_length()}, obfuscation_bits={self.obfuscation_bits})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PaillierPublicKey) and (self.n, self.hs, self.obfuscation_bits) == (
            other.n, other.hs, other.obfuscation_bits)

    def __hash__(self) -> int:
        return hash((int(self.n), int(self.hs)))

    @property
    def ciphertext_modulus(self) -> Any:
        return self.nsquare

    @property
    def plaintext_bits(self) -> int:
        return self.n.bit_length() - 2

    @property
    def plaintext_modulus(self) -> Any:
        """``n``: plaintexts are residues modulo ``n`` (upper half negative)."""
        return self.n

    @property
    def security_bits(self) -> int:
        return min(security_bits_for_modulus(self.n.bit_length()), self.obfuscation_bits // 2)

    def encrypt(self, plaintexts: Sequence[int] | np.ndarray) -> Ciphertexts:
        """Encrypt signed integers with ``|m| < 2**plaintext_bits``.

        Uses the process pool for batches of at least ``PARALLEL_ENCRYPT_AT`` values.

        Raises
        ------
        CryptoError
            If a plaintext is out of range (nothing is encrypted then).
        """
        vals = plaintexts.tolist() if isinstance(plaintexts, np.ndarray) else plaintexts
        res = fixed_point.to_residues(vals, int(self.n), self.plaintext_bits)
        if len(res) >= PARALLEL_ENCRYPT_AT and worker_count() > 1:
            w = self.ciphertext_bytes
            blobs = map_chunks(_encrypt_task, (int(self.n), int(self.hs), self.obfuscation_bits), res)
            return [c for b in blobs for c in from_bytes(b, w)]
        return _encrypt_kernel(self.n, self.hs, self.obfuscation_bits, res)

    def to_wire(self) -> dict:
        return {"scheme": self.scheme, "n": int(self.n), "hs": int(self.hs), "obfuscation_bits": self.obfuscation_bits}

    @classmethod
    def from_wire(cls, data: dict, *, min_bits: int = 2048) -> "PaillierPublicKey":
        if not isinstance(data, dict) or data.get("scheme") != cls.scheme:
            raise CryptoError("not a Paillier public key (expected a dict with scheme='paillier')")
        n, hs, t = data.get("n"), data.get("hs"), data.get("obfuscation_bits")
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (n, hs, t)):
            raise CryptoError("Paillier public key fields n, hs, obfuscation_bits must be integers")
        if n % 2 == 0 or not min_bits <= n.bit_length() <= _MAX_BITS:
            raise CryptoError(f"Paillier modulus of {n.bit_length()} bits refused: need an odd modulus of "
                              f"{min_bits}..{_MAX_BITS} bits")
        if not 1 < hs < n * n or gmpy2.gcd(hs, n) != 1:
            raise CryptoError("Paillier public key has an invalid obfuscation base hs")
        if not 128 <= t <= n.bit_length():
            raise CryptoError(f"Paillier obfuscation_bits {t} outside [128, {n.bit_length()}]")
        return cls(n, hs, t)


class PaillierPrivateKey(PrivateKey):
    """Paillier private key: the factors ``p, q`` of ``n`` and CRT constants.

    Parameters
    ----------
    public_key : PaillierPublicKey
    p, q : int
        The prime factors; checked against ``n``.
    """

    def __init__(self, public_key: PaillierPublicKey, p: int, q: int) -> None:
        p, q = mpz(p), mpz(q)
        if p * q != public_key.n or p == q:
            raise CryptoError("the given primes do not factor this Paillier public key's modulus")
        if p > q:  # a fixed order makes the CRT constants canonical
            p, q = q, p
        self.public_key = public_key
        self.p, self.q = p, q
        self.p2, self.q2 = p * p, q * q
        g = public_key.n + 1
        self.hp = gmpy2.invert((gmpy2.powmod(g, p - 1, self.p2) - 1) // p, p)
        self.hq = gmpy2.invert((gmpy2.powmod(g, q - 1, self.q2) - 1) // q, q)
        self.q_inv_p = gmpy2.invert(q, p)

    def __repr__(self) -> str:
        return f"PaillierPrivateKey(bits={self.public_key.n.bit_length()})"

    def decrypt(self, cts: Sequence[Any], *, bound_bits: int | None = None) -> list[int]:
        """Decrypt to signed integers (CRT; thread pool for large batches, key stays in-process).

        Parameters
        ----------
        cts : sequence of mpz
        bound_bits : int, optional
            Caller-guaranteed ``|m| < 2**bound_bits``. At most ``|p| - 2`` bits, it halves the
            work by decrypting modulo ``p`` only.
        """
        half = bound_bits is not None and bound_bits <= self.p.bit_length() - 2
        common = (self.p, self.q, self.hp, self.hq, self.q_inv_p, half)
        cts = list(cts)
        if decrypt_in_threads(len(cts), PARALLEL_DECRYPT_AT):
            res = [m for part in map_chunks(_decrypt_kernel, common, cts, threads=True) for m in part]
        else:
            res = _decrypt_kernel(*common, cts)
        return fixed_point.from_residues(res, int(self.p if half else self.public_key.n))

    def encrypt(self, plaintexts: Sequence[int] | np.ndarray) -> Ciphertexts:
        """Key-owner encryption through CRT (same ciphertext distribution, ~2x faster)."""
        pub = self.public_key
        vals = plaintexts.tolist() if isinstance(plaintexts, np.ndarray) else plaintexts
        res = fixed_point.to_residues(vals, int(pub.n), pub.plaintext_bits)
        common = (int(self.p), int(self.q), int(pub.hs), pub.obfuscation_bits)
        if len(res) >= PARALLEL_ENCRYPT_AT and worker_count() > 1:
            w = pub.ciphertext_bytes
            return [c for b in map_chunks(_encrypt_crt_task, common, res) for c in from_bytes(b, w)]
        return _encrypt_crt_kernel(*common, res)


def public_key_class() -> type[PaillierPublicKey]:
    """The public-key class (used by :func:`fedrisk.crypto.additive.public_key_from_wire`)."""
    return PaillierPublicKey


def generate_keypair(bits: int = 2048, *, obfuscation_bits: int = DEFAULT_OBFUSCATION_BITS) -> tuple[PaillierPublicKey, PaillierPrivateKey]:
    """Generate a Paillier key pair with a ``bits``-bit modulus.

    Parameters
    ----------
    bits : int
        2048 (default, ~112-bit security) or 3072 (~128-bit). Sizes down to 256 are accepted for
        tests; they are insecure.
    obfuscation_bits : int
        DJN exponent length ``t`` (>= 128; default 256).

    Returns
    -------
    (PaillierPublicKey, PaillierPrivateKey)
    """
    if bits % 2 or not 256 <= bits <= _MAX_BITS:
        raise CryptoError(f"Paillier key size {bits} must be an even number of bits in [256, {_MAX_BITS}]; use 2048 or 3072")
    if not 128 <= obfuscation_bits <= bits:
        raise CryptoError(f"obfuscation_bits {obfuscation_bits} must lie in [128, {bits}]")
    while True:
        p, q = random_prime(bits // 2), random_prime(bits // 2)
        n = p * q
        if p != q and n.bit_length() == bits and gmpy2.gcd(n, (p - 1) * (q - 1)) == 1:
            break
    while True:
        x = mpz(secrets.randbelow(int(n) - 2) + 2)
        if gmpy2.gcd(x, n) == 1:
            break
    h = (-x * x) % n
    p2, q2 = p * p, q * q
    # h^n mod n^2 through CRT: two half-size exponentiations.
    hp, hq = gmpy2.powmod(h, n, p2), gmpy2.powmod(h, n, q2)
    hs = hp + p2 * ((hq - hp) * gmpy2.invert(p2, q2) % q2)
    pub = PaillierPublicKey(n, hs, obfuscation_bits)
    return pub, PaillierPrivateKey(pub, p, q)
