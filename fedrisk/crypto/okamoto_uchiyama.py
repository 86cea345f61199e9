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
Encryption uses fixed-base window tables for ``g`` (covering ``plaintext_bits``) and ``h``
(covering ``t``; 14-bit windows for batches of 1,000 or more), so its cost grows with the
plaintext's bit length. For large batches it is split: :meth:`OUPublicKey.obfuscators_async` makes
fresh obfuscators ``h^r`` ahead of time (one CSPRNG draw each, never reused: the caller consumes
each exactly once) and :meth:`OUPublicKey.encrypt_slots_to_wire_async` multiplies them by ``g^m``,
which for a packed ``m = sum_j v_j 2^(j k)`` is one table lookup per slot (:func:`_slot_tables`).
The ciphertexts are identical in distribution (and, for the same ``r``, bit for bit) to
``g^m h^r`` computed directly. The key owner has the same two methods on :class:`OUPrivateKey`:
with the compiled kernel (:mod:`fedrisk.crypto.montgomery`) they compute modulo ``p^2`` and ``q``
and recombine (:class:`_CrtEncryptor`, ~2x faster, in the owner's threads), and take the
plaintext's part from the order-``p`` component of ``g`` only (``gamma^m h^r``: the same
decryption, the same hiding; the argument is in :class:`_CrtEncryptor`). Cost per owner-side
encryption at 2048 bits (224-bit ``r``, measured on the loaded 2-core machine with the kernel's
mulx/adx product): ~10-13 core-us for ``h^r`` (14-16 products of 22 limbs and as many of 11);
the plaintext's part and the CRT 1.5 core-us for six slots (4.9 with one table product per slot
and modulus). An owner that announces a large job (:meth:`OUPrivateKey.expect_encryptions`,
at least 2M encryptions) gets 16-bit windows for ``h``: 14 products per modulus instead of 16, for
~242 MB of tables instead of ~70 MB (-8 to -13 % per ``h^r`` in a same-process comparison; the
exponent is drawn as before, only split into wider digits).

Security argument:

* Factoring ``n = p^2 q``: the number field sieve does not profit from the square, ECM on a
  683-bit factor is far out of reach, and the lattice attacks on ``p^r q`` need large ``r``; the
  usual estimate is the RSA one for the same modulus size: 2048 bits (|p| ~ 683) ~ 112-bit
  security, 3072 bits (|p| = 1024) ~ 128-bit.
* Semantic security: the p-subgroup assumption of Okamoto-Uchiyama. Taking ``r`` short
  (default ``t = 256``) instead of uniform in ``Z_n`` adds the short-exponent assumption for
  ``<h>`` (a group of unknown order): generic attacks on a ``t``-bit exponent cost ``2^(t/2)``.
  ``obfuscation_bits=bits`` restores the original full-length ``r``. The length follows the
  rule for short Diffie-Hellman exponents (NIST SP 800-56A: twice the security strength):
  SecureBoost takes ``t = 224`` for a 2048-bit key's 112-bit level. Shorter ones (SecretFlow's
  HEU uses 110 bits at 2048) cost fewer products but cap the scheme at ``t/2``-bit security:
  testing a guessed ``m`` is finding a ``t``-bit exponent of ``c g^-m``.
* The Jacobi symbol ``(c / n) = (c / q)`` is the one character anyone can compute from the public
  key. With ``h`` drawn apart from ``g`` (``h = g0^n``, not ``g^n`` as in the original scheme),
  ``(c / n) = (g / n)^m (h / n)^r``: a ``g`` of symbol -1 with an ``h`` of symbol +1 would reveal
  the parity of every plaintext (e.g. a 0/1 label encrypted alone). Key generation therefore takes
  ``g`` of symbol +1, so the symbol of a ciphertext does not depend on ``m``
  (``tests/crypto/test_ou_jacobi_leak.py``).
* Okamoto-Uchiyama is not secure against chosen-ciphertext attacks: decrypting a ciphertext of
  an ``m >= p`` yields ``m mod p``, and revealing that value to the sender factors ``n``. A key
  owner must never send back raw decryptions of ciphertexts a peer chose; protocols reveal only
  derived decisions (SecureBoost: "split on your bin k").
"""
from __future__ import annotations

import secrets
import threading
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Sequence

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
    random_exponent_digits,
    to_bytes,
    worker_count,
)
from fedrisk.crypto.paillier import DEFAULT_OBFUSCATION_BITS, random_prime, security_bits_for_modulus
from fedrisk.crypto.workers import broken_pool_error, distributed, process_pool
from fedrisk.errors import CryptoError
from fedrisk.transport.codec import BigInts

__all__ = ["OUPublicKey", "OUPrivateKey", "generate_keypair"]

_MAX_BITS = 16384
#: batches at least this large use a wider window for the randomness base ``h``: 14-bit windows
#: take 16 instead of 19 multiplications for a 224-bit ``r`` (-3 of ~23 per encryption) for a
#: table of 16 x 16384 residues (~75 MB at 2048 bits, ~0.7 s to build once per process)
_WIDE_AT = 1_000


def _table(base: int, modulus: int, bits: int, window: int = 12) -> FixedBaseTable:
    return fixed_base_table(base, modulus, bits, window=window)


def _obfuscator_kernel(n: int, h: int, r_bits: int, count: int) -> list:
    """``count`` fresh obfuscators ``h^r mod n``, ``r`` uniform in ``[0, 2^r_bits)`` (one each)."""
    n = mpz(n)
    th = _table(h, n, r_bits, 14 if count >= _WIDE_AT else 12)
    # one CSPRNG call for the batch, split into window digits with numpy (the table lookups need
    # digits, not the integer)
    digits = th.random_digits(count, r_bits)
    rows = th.digit_rows(digits.shape[1])
    out = []
    for ds in digits.tolist():
        acc = None
        for row, d in zip(rows, ds):
            if d:
                acc = row[d] if acc is None else acc * row[d] % n
        out.append(mpz(1) if acc is None else acc)
    return out


def _encrypt_kernel(n: int, g: int, h: int, m_bits: int, r_bits: int, plaintexts: Sequence[int],
                    obfuscators: bytes | None = None) -> list:
    """``g^m h^r mod n`` for signed ``m`` (already range-checked).

    ``obfuscators``: optional precomputed ``h^r`` values (``len(plaintexts)`` of them, fixed-width
    bytes, from :func:`_obfuscator_task`), each used for exactly one ciphertext; fresh ones are
    made here otherwise.
    """
    n = mpz(n)
    w = (int(n).bit_length() + 7) // 8
    tg = _table(g, n, m_bits)
    if obfuscators is None:
        rs = _obfuscator_kernel(n, h, r_bits, len(plaintexts))
    else:
        if len(obfuscators) != w * len(plaintexts):
            raise CryptoError(f"{len(obfuscators) // w} obfuscators for {len(plaintexts)} plaintexts")
        rs = from_bytes(obfuscators, w)
    inv = gmpy2.invert
    out = []
    for m, r in zip(plaintexts, rs):
        if m >= 0:
            out.append(tg.pow(m, r))
        else:
            out.append(inv(tg.pow(-m), n) * r % n)
    return out


def _encrypt_task(n: int, g: int, h: int, m_bits: int, r_bits: int, plaintexts: Sequence[int],
                  obfuscators: bytes | None = None) -> bytes:
    return to_bytes(_encrypt_kernel(n, g, h, m_bits, r_bits, plaintexts, obfuscators), (int(n).bit_length() + 7) // 8)


_SLOT_TABLES: dict[tuple, list[list[Any]]] = {}


def slot_offsets(slot_bits: int | Sequence[int], n_slots: int) -> tuple[int, ...]:
    """Bit offset of every slot: ``j * slot_bits`` for equal slots, or the given offsets.

    Slot encryption takes either a width (slots laid end to end) or one offset per slot (e.g.
    SecureBoost's several rows per plaintext, whose row groups carry headroom between them).
    """
    if isinstance(slot_bits, (int, np.integer)):
        return tuple(j * int(slot_bits) for j in range(n_slots))
    offs = tuple(int(o) for o in slot_bits)
    if len(offs) != n_slots:
        raise CryptoError(f"{len(offs)} slot offsets for {n_slots} slots")
    return offs


def _slot_tables(n: Any, g: int, slot_bits: int | Sequence[int], bounds: Sequence[int]) -> list[list[Any]]:
    """Per slot ``j`` at bit offset ``o_j``: ``(g^(2^o_j))^v mod n`` for every ``v`` in ``[-B_j, B_j]``
    (index ``v + B_j``); ``o_j = j k`` for equal slots of ``k = slot_bits`` bits.

    One multiplication per entry to build (65,537 x 2 + 16,385 x 2 for SecureBoost's (g, h) at 16
    fractional bits: ~0.4 s and ~45 MB per process at 2048 bits), then ``g^m`` of a packed ``m``
    costs one multiplication per non-zero slot instead of one per 12-bit window.
    """
    offsets = slot_offsets(slot_bits, len(bounds))
    key = (int(n), int(g), offsets, tuple(int(b) for b in bounds))
    t = _SLOT_TABLES.get(key)
    if t is None:
        if len(_SLOT_TABLES) >= 2:
            _SLOT_TABLES.pop(next(iter(_SLOT_TABLES)))
        n = mpz(n)
        t = []
        for j, bound in enumerate(bounds):
            base = gmpy2.powmod(mpz(g), mpz(1) << offsets[j], n)
            pos, neg = [mpz(1)], [mpz(1)]
            x, y, ib = mpz(1), mpz(1), gmpy2.invert(base, n)
            for _ in range(bound):
                x = x * base % n
                y = y * ib % n
                pos.append(x)
                neg.append(y)
            t.append(neg[:0:-1] + pos)
        _SLOT_TABLES[key] = t
    return t


def _encrypt_slots_task(n: int, g: int, h: int, r_bits: int, slot_bits: int | tuple[int, ...], bounds: Sequence[int],
                        slot_values: np.ndarray, obfuscators: bytes | None = None) -> bytes:
    """Encrypt packed plaintexts ``m = sum_j v_j 2^(j slot_bits)`` given as their slots ``v``:
    ``g^m h^r = prod_j T_j[v_j] * h^r`` (range-checked by the caller)."""
    n = mpz(n)
    w = (int(n).bit_length() + 7) // 8
    count = len(slot_values)
    if obfuscators is None:
        rs = _obfuscator_kernel(n, h, r_bits, count)
    else:
        if len(obfuscators) != w * count:
            raise CryptoError(f"{len(obfuscators) // w} obfuscators for {count} plaintexts")
        rs = from_bytes(obfuscators, w)
    tabs = _slot_tables(n, g, slot_bits, bounds)
    idx = (np.asarray(slot_values, dtype=np.int64) + np.asarray(bounds, dtype=np.int64)[None, :]).tolist()
    out = []
    for r, row in zip(rs, idx):
        acc = r
        for tab, i in zip(tabs, row):
            acc = acc * tab[i] % n
        out.append(acc)
    return to_bytes(out, w)


def _obfuscator_task(n: int, h: int, r_bits: int, count: int) -> bytes:
    return to_bytes(_obfuscator_kernel(n, h, r_bits, count), (int(n).bit_length() + 7) // 8)


def _decrypt_kernel(p: Any, gp_inv: Any, cts: Sequence[Any]) -> list:
    return [(x - 1) // p * gp_inv % p for x in montgomery.powmod_list(cts, int(p - 1), int(p * p))]


_CRT_LOCK = threading.Lock()


class _CrtEncryptor:
    """The key owner's OU encryption through CRT on the compiled kernel (:mod:`.montgomery`).

    The owner knows ``p`` and ``q``, so it computes modulo ``p^2`` and ``q`` (22- and 11-limb
    numbers instead of 32-limb ones) and recombines:

    * ``h^r`` from fixed-base tables of ``h`` (14-bit windows; 16-bit after :meth:`expect`
      announced a large job), held once per key as contiguous limb arrays (~70 MB, or ~242 MB with
      16-bit windows, at 2048 bits, built in ~0.5-1.8 s on first use) and shared by the party's
      threads. ``r`` is drawn exactly as in the public-key path (uniform ``obfuscation_bits`` bits
      from the OS CSPRNG).
    * the plaintext part is ``gamma^m``, ``gamma`` being the component of ``g`` of order ``p``
      (``gamma = (1 + p)^(-gp) mod p^2``, ``= 1 mod q``, with ``gp = L(g^(p-1) mod p^2)``), so

          c = gamma^m h^r:   c = h^r (1 + p z) mod p^2,  c = h^r mod q,  z = -m gp mod p

      ``1 + p z`` is linear in ``z``: a packed ``m = sum_j v_j 2^(o_j)`` costs limb additions and
      one product modulo ``p`` (:func:`fedrisk.crypto.montgomery.p_subgroup_shift`) instead of
      one table product per slot modulo ``p^2`` and ``q``: with the CRT, 1.5 instead of 4.9 µs
      per ciphertext of three SecureBoost rows at 2048 bits, beside ~10 µs for ``h^r``.

    Why this is the same scheme: write ``g = gamma delta`` with ``delta`` in the group ``Q`` of
    ``n``-th powers (the non-``p`` part, where ``h`` lives). Decryption raises to ``p - 1``,
    which removes every element of ``Q``, so ``gamma^m h^r`` and ``g^m h^r`` decrypt to the same
    ``m``, and sums of either kind (the feature holders' masks use the public path) decrypt to
    the sums. Hiding: a public-path ciphertext is ``gamma^m (delta^m h^r)``, an owner one
    ``gamma^m h^r``. Both hide ``gamma^m`` under the same assumptions (``h^r`` with short ``r``
    indistinguishable from a random element of ``Q``, and ``Q`` from the whole group: the
    p-subgroup assumption); the owner's form even keeps the ``Q`` part in one coset of ``<h>``
    whatever ``m``, where the public form's ``delta^m h^r`` moves with ``m``. Its Jacobi symbol is
    that of ``h^r`` (``gamma = 1 mod q``): ``tests/crypto/test_ou_jacobi_leak.py`` checks both
    paths. ``gamma`` itself is never published (``gcd(gamma - 1, n)`` would give ``p``).

    Runs in threads (the kernel releases the GIL): ``p`` and ``q`` stay in the owner's process.
    Obfuscators ``h^r`` are handed around in CRT form, ``h^r mod p^2`` then ``h^r mod q`` per row
    (:attr:`obfuscator_bytes` wide), until :meth:`encrypt_slots` spends them.
    """

    #: window (bits) of ``h``'s fixed-base tables: 16 windows for a 224-bit ``r``, 2 x 16 x 16,384
    #: residues (~70 MB at 2048 bits, ~0.6 CPU-s to build)
    WINDOW = 14
    #: window for owners that announce at least :attr:`WIDE_AT` encryptions (:meth:`expect`): 14
    #: windows instead of 16, i.e. 2 fewer table products per modulus and ``h^r`` (-8 to -12 % of
    #: its CPU), for 4x the entries per window: 2 x 14 x 65,536 residues, ~242 MB at 2048 bits,
    #: ~1.8 CPU-s to build; worth it from ~1-2M encryptions on (SecureBoost: rows x trees)
    WIDE_WINDOW, WIDE_AT = 16, 2_000_000

    def __init__(self, pub: "OUPublicKey", p: Any, q: Any) -> None:
        self.pub = pub
        self.p, self.q = int(p), int(q)
        self.p2 = self.p * self.p
        # L(g^(p-1) mod p^2): decryption divides by it, so the plaintext part is (1 + p)^(-m gp)
        self.gp = int((gmpy2.powmod(gmpy2.mpz(pub.g), self.p - 1, self.p2) - 1) // self.p % self.p)
        self.w1, self.w2 = montgomery.width_of(self.p2), montgomery.width_of(self.q)
        self.obfuscator_bytes = self.w1 + self.w2
        self._lock = threading.Lock()
        self._h: tuple | None = None
        self._slots: dict[tuple, list[int]] = {}
        self.window = self.WINDOW

    def expect(self, count: int) -> int:
        """Announce about ``count`` encryptions (before the first): from :attr:`WIDE_AT` on, the
        tables of ``h`` use :attr:`WIDE_WINDOW`. The exponents are drawn exactly as before
        (uniform ``obfuscation_bits`` bits from the OS CSPRNG), only split into wider digits, so
        the obfuscators have the same distribution. Returns the window in use."""
        with self._lock:
            if self._h is None and count >= self.WIDE_AT:
                self.window = self.WIDE_WINDOW
            return self.window

    @staticmethod
    def _tables(jobs: list[list[tuple[int, int, int]]]) -> list:
        """One concatenated :class:`PowerTable` per job, a job being ``(modulus, base, count)``
        pieces; the pieces are built on a private thread pool (the kernel releases the GIL; the
        shared crypto pool may be the caller, so it is not used here)."""
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=worker_count()) as ex:
            futs = [[ex.submit(montgomery.power_table, *piece) for piece in job] for job in jobs]
            return [montgomery.PowerTable.concat([f.result() for f in job]) for job in futs]

    def _h_tables(self) -> tuple:
        with self._lock:
            if self._h is None:
                w, bits = self.window, self.pub.obfuscation_bits
                rows = -(-bits // w)
                jobs = []
                for mod in (self.p2, self.q):
                    base, job = gmpy2.mpz(self.pub.h) % mod, []
                    for _ in range(rows):
                        job.append((mod, int(base), 1 << w))   # row i: h^(d 2^(w i)), d < 2^w
                        base = gmpy2.powmod(base, 1 << w, mod)
                    jobs.append(job)
                tp, tq = self._tables(jobs)
                self._h = (tp, tq, rows)
            return self._h

    def _consts(self, offsets: tuple[int, ...]) -> list[int]:
        """``-gp 2^(o_j) mod p`` per slot offset: slot ``j`` of value ``v`` adds ``v`` times this to
        ``z``, the exponent of ``1 + p`` that decrypts to ``v 2^(o_j)`` (see :meth:`encrypt_slots`)."""
        with self._lock:
            c = self._slots.get(offsets)
            if c is None:
                if len(self._slots) >= 8:
                    self._slots.pop(next(iter(self._slots)))
                c = self._slots[offsets] = [int(-self.gp * (1 << o) % self.p) for o in offsets]
            return c

    def obfuscators(self, count: int, digits: np.ndarray | None = None) -> bytes:
        """``count`` fresh obfuscators ``h^r`` in CRT form (``digits``: the exponents' window
        digits (:attr:`window` bits), for tests only; fresh CSPRNG draws otherwise)."""
        tp, tq, rows = self._h_tables()
        w = self.window
        if digits is None:
            digits = random_exponent_digits(count, self.pub.obfuscation_bits, w)
        idx = digits + (np.arange(rows, dtype=np.int64) << w)[None, :]
        idx[digits == 0] = -1
        a = np.frombuffer(montgomery.gather_products(tp, idx), dtype=np.uint8).reshape(count, self.w1)
        b = np.frombuffer(montgomery.gather_products(tq, idx), dtype=np.uint8).reshape(count, self.w2)
        return np.hstack([a, b]).tobytes()

    def encrypt_slots(self, v: np.ndarray, slot_bits: int | tuple[int, ...], bounds: tuple[int, ...],
                      obfuscators: bytes | None) -> bytes:
        """Ciphertexts (fixed-width bytes mod ``n``) of ``m_i = sum_j v_ij 2^(o_j)`` (``o_j = j slot_bits``,
        or the offsets given as ``slot_bits``), each
        spending one obfuscator (fresh ones are made when none are given)."""
        count = len(v)
        if count == 0:
            return b""
        obf = self.obfuscators(count) if obfuscators is None else obfuscators
        if len(obf) != count * self.obfuscator_bytes:
            raise CryptoError(f"{len(obf) // self.obfuscator_bytes} obfuscators for {count} plaintexts")
        pair = np.frombuffer(obf, dtype=np.uint8).reshape(count, self.obfuscator_bytes)
        consts = self._consts(slot_offsets(slot_bits, len(bounds)))
        a = montgomery.p_subgroup_shift(self.p, consts, np.asarray(v, dtype=np.int64), pair[:, :self.w1].tobytes())
        b = pair[:, self.w1:].tobytes()
        return montgomery.crt_combine(self.p2, self.q, a, b, self.pub.ciphertext_bytes)


def _thread_futures(fn: Callable[..., bytes], pieces: list[tuple], background: bool = False
                    ) -> list[Callable[[], bytes]]:
    """Run ``fn(*piece)`` for every piece on the crypto thread pool (or the lower-priority
    background pool); one waiter per piece."""
    from fedrisk.crypto.workers import background_thread_pool, thread_pool

    pool = background_thread_pool() if background else thread_pool()
    futs = [pool.submit(fn, *piece) for piece in pieces]
    return [f.result for f in futs]


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
        ms, common = self._checked(plaintexts)
        if len(ms) >= PARALLEL_ENCRYPT_AT and worker_count() > 1:
            w = self.ciphertext_bytes
            return [c for b in map_chunks(_encrypt_task, common, ms) for c in from_bytes(b, w)]
        return _encrypt_kernel(*common, ms)

    def encrypt_to_wire(self, plaintexts: Sequence[int] | np.ndarray) -> BigInts:
        """Encrypt straight to the wire form: the workers' bytes are the message, no ``mpz`` here."""
        ms, common = self._checked(plaintexts)
        w = self.ciphertext_bytes
        if len(ms) >= PARALLEL_ENCRYPT_AT and worker_count() > 1:
            return BigInts.from_blob(b"".join(map_chunks(_encrypt_task, common, ms)), w, len(ms))
        return BigInts.from_blob(_encrypt_task(*common, ms), w, len(ms))

    def encrypt_to_wire_async(self, plaintexts: Sequence[int] | np.ndarray, obfuscators: bytes | None = None
                              ) -> Callable[[], BigInts]:
        """Start :meth:`encrypt_to_wire` on the process pool; call the result to wait for it.

        Lets a caller queue several batches so that the workers never wait while it sends one.
        ``obfuscators``: ``len(plaintexts)`` values from :meth:`obfuscators_async`, consumed here
        (one per ciphertext; the caller must never pass the same ones twice).
        """
        ms, common = self._checked(plaintexts)
        w = self.ciphertext_bytes
        if obfuscators is not None and len(obfuscators) != w * len(ms):
            raise CryptoError(f"{len(obfuscators) // w} obfuscators for {len(ms)} plaintexts")
        if len(ms) < PARALLEL_ENCRYPT_AT or worker_count() < 2:
            out = BigInts.from_blob(_encrypt_task(*common, ms, obfuscators), w, len(ms))
            return lambda: out
        pool = process_pool()
        size = -(-len(ms) // worker_count())
        futs = [pool.submit(_encrypt_task, *common, ms[lo:lo + size],
                            None if obfuscators is None else obfuscators[lo * w:(lo + size) * w])
                for lo in range(0, len(ms), size)]

        def result() -> BigInts:
            try:
                return BigInts.from_blob(b"".join(f.result() for f in futs), w, len(ms))
            except BrokenProcessPool:
                raise broken_pool_error() from None

        return result

    def encrypt_slots_to_wire_async(self, slot_values: np.ndarray, slot_bits: int | Sequence[int], bounds: Sequence[int],
                                    obfuscators: bytes | None = None) -> Callable[[], BigInts]:
        """:meth:`encrypt_to_wire_async` of packed plaintexts ``m_i = sum_j v_ij 2^(j slot_bits)``,
        given as their slot integers ``v`` (``(n, n_slots)``, ``|v_ij| <= bounds[j]``); same
        ciphertexts, about two multiplications fewer each (see :func:`_slot_tables`). ``slot_bits``
        may instead be one bit offset per slot (:func:`slot_offsets`)."""
        v, b = self.checked_slots(slot_values, slot_bits, bounds)
        w = self.ciphertext_bytes
        count = len(v)
        if obfuscators is not None and len(obfuscators) != w * count:
            raise CryptoError(f"{len(obfuscators) // w} obfuscators for {count} plaintexts")
        common = (int(self.n), int(self.g), int(self.h), self.obfuscation_bits, slot_offsets(slot_bits, len(b)),
                  tuple(int(x) for x in b))
        if count < PARALLEL_ENCRYPT_AT or worker_count() < 2:
            out = BigInts.from_blob(_encrypt_slots_task(*common, v, obfuscators), w, count)
            return lambda: out
        pool = process_pool()
        size = -(-count // worker_count())
        futs = [pool.submit(_encrypt_slots_task, *common, v[lo:lo + size],
                            None if obfuscators is None else obfuscators[lo * w:(lo + size) * w])
                for lo in range(0, count, size)]

        def result() -> BigInts:
            try:
                return BigInts.from_blob(b"".join(f.result() for f in futs), w, count)
            except BrokenProcessPool:
                raise broken_pool_error() from None

        return result

    def checked_slots(self, slot_values: np.ndarray, slot_bits: int | Sequence[int], bounds: Sequence[int]
                      ) -> tuple[np.ndarray, np.ndarray]:
        """Validate a slot layout against this key and the values against their bounds:
        ``(values, bounds)`` as arrays. ``slot_bits``: equal slots' width, or one offset per slot
        (increasing; each slot then spans up to the next offset, the last up to the key's bound)."""
        v = np.asarray(slot_values)
        if v.ndim != 2 or v.shape[1] != len(bounds) or v.dtype.kind not in "iu":
            raise CryptoError(f"slot values must be an (n, {len(bounds)}) integer array")
        b = np.asarray(bounds, dtype=np.int64)
        offs = np.asarray(slot_offsets(slot_bits, len(bounds)) + (
            len(bounds) * int(slot_bits) if isinstance(slot_bits, (int, np.integer)) else self._plaintext_bits,),
            dtype=np.int64)
        widths = np.diff(offs)
        if offs[-1] > self._plaintext_bits or (offs[:-1] < 0).any() or (widths < 2).any() or (b < 0).any() \
                or (b >= 1 << 20).any() or (b >= np.left_shift(1, np.minimum(widths - 1, 62))).any():
            raise CryptoError("slot layout does not fit this key (or its slot tables would be too large)")
        if v.size and (np.abs(v) > b[None, :]).any():
            raise CryptoError("a slot value exceeds its bound")
        return v, b

    @property
    def obfuscator_bytes(self) -> int:
        """Width of one obfuscator made by :meth:`obfuscators_async`."""
        return self.ciphertext_bytes

    def obfuscators_async(self, count: int, tasks: int = 4, background: bool = False) -> list[Callable[[], bytes]]:
        """Start computing ``count`` fresh obfuscators ``h^r`` (``r`` uniform ``obfuscation_bits``
        bits, one CSPRNG draw each) on the process pool, in ``tasks`` pieces; each returned function
        waits for its piece (fixed-width bytes).

        Encryption is ``g^m * h^r``; the ``h^r`` part (16 of ~20 multiplications) does not depend
        on the data, so a key holder with idle workers can make it before the plaintexts exist and
        pass it to :meth:`encrypt_to_wire_async`. Each obfuscator must be used exactly once.
        ``background`` is accepted for interface compatibility with :class:`OUPrivateKey` (the
        process pool has one priority).
        """
        args = (int(self.n), int(self.h), self.obfuscation_bits)
        if count <= 0:
            return []
        if worker_count() < 2:
            blob = _obfuscator_task(*args, count)
            return [lambda: blob]
        pool = process_pool()
        size = -(-count // max(1, tasks))
        futs = [pool.submit(_obfuscator_task, *args, min(size, count - lo)) for lo in range(0, count, size)]

        def waiter(f):
            def result() -> bytes:
                try:
                    return f.result()
                except BrokenProcessPool:
                    raise broken_pool_error() from None
            return result

        return [waiter(f) for f in futs]

    def _checked(self, plaintexts: Sequence[int] | np.ndarray) -> tuple[list[int], tuple]:
        vals = plaintexts.tolist() if isinstance(plaintexts, np.ndarray) else plaintexts
        limit = 1 << self._plaintext_bits
        ms = []
        for i, v in enumerate(vals):
            v = int(v)
            if not -limit < v < limit:
                raise CryptoError(f"plaintext at position {i} has {abs(v).bit_length()} bits; this OU key holds "
                                  f"signed values below {self._plaintext_bits} bits")
            ms.append(v)
        return ms, (int(self.n), int(self.g), int(self.h), self._plaintext_bits, self.obfuscation_bits)

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

    # -- owner-side encryption (CRT on the compiled kernel; the public-key path otherwise) ------
    def _crt(self) -> _CrtEncryptor | None:
        # on a Ray cluster the public-key kernels run there in chunks (same ciphertext
        # distribution); the CRT tables live in this process's threads, so they stay local-only
        if not montgomery.AVAILABLE or distributed():
            return None
        with _CRT_LOCK:  # one encryptor (and one set of tables) per key, whichever thread asks
            enc = self.__dict__.get("_crt_encryptor")
            if enc is None:
                enc = self.__dict__["_crt_encryptor"] = _CrtEncryptor(self.public_key, self.p, self.q)
        return enc

    def expect_encryptions(self, count: int) -> None:
        """Announce about ``count`` owner-side encryptions before the first: large jobs get wider
        fixed-base windows for ``h`` (fewer products per encryption for a larger table, see
        :attr:`_CrtEncryptor.WIDE_AT`). Same ciphertext distribution either way."""
        crt = self._crt()
        if crt is not None:
            crt.expect(int(count))

    @property
    def obfuscator_bytes(self) -> int:
        """Width of one obfuscator made by :meth:`obfuscators_async`."""
        crt = self._crt()
        return self.public_key.obfuscator_bytes if crt is None else crt.obfuscator_bytes

    def obfuscators_async(self, count: int, tasks: int = 4, background: bool = False) -> list[Callable[[], bytes]]:
        """:meth:`OUPublicKey.obfuscators_async`, through CRT when the compiled kernel is there
        (same distribution; the values are in CRT form, for this key's
        :meth:`encrypt_slots_to_wire_async` only). ``background``: made by lower-priority threads
        (:func:`fedrisk.crypto.workers.background_thread_pool`), for values needed later."""
        crt = self._crt()
        if crt is None:
            return self.public_key.obfuscators_async(count, tasks, background)
        if count <= 0:
            return []
        size = -(-count // max(1, tasks))
        return _thread_futures(crt.obfuscators, [(min(size, count - lo),) for lo in range(0, count, size)],
                               background=background)

    def encrypt_slots_to_wire_async(self, slot_values: np.ndarray, slot_bits: int | Sequence[int], bounds: Sequence[int],
                                    obfuscators: bytes | None = None) -> Callable[[], BigInts]:
        """:meth:`OUPublicKey.encrypt_slots_to_wire_async` by the key owner: ciphertexts of the
        same plaintexts, through CRT in this process's threads when the compiled kernel is there
        (``gamma^m h^r`` instead of ``g^m h^r``: the same decryption and hiding, see
        :class:`_CrtEncryptor`). ``obfuscators`` must come from this key's :meth:`obfuscators_async`."""
        crt = self._crt()
        if crt is None:
            return self.public_key.encrypt_slots_to_wire_async(slot_values, slot_bits, bounds, obfuscators)
        v, b = self.public_key.checked_slots(slot_values, slot_bits, bounds)
        count, ow, w = len(v), crt.obfuscator_bytes, self.public_key.ciphertext_bytes
        if obfuscators is not None and len(obfuscators) != ow * count:
            raise CryptoError(f"{len(obfuscators) // ow} obfuscators for {count} plaintexts")
        bt = tuple(int(x) for x in b)
        size = max(1, -(-count // worker_count()))
        pieces = [(v[lo:lo + size], slot_offsets(slot_bits, len(bt)), bt,
                   None if obfuscators is None else obfuscators[lo * ow:(lo + size) * ow])
                  for lo in range(0, count, size)]
        waits = _thread_futures(crt.encrypt_slots, pieces)
        return lambda: BigInts.from_blob(b"".join(f() for f in waits), w, count)

    def decrypt(self, cts: Sequence[Any], *, bound_bits: int | None = None) -> list[int]:
        """Decrypt to signed integers (thread pool for large batches; key stays in-process).

        ``bound_bits`` is accepted for interface compatibility; OU always works modulo ``p``.
        """
        cts = list(cts)
        if decrypt_in_threads(len(cts), PARALLEL_DECRYPT_AT):
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
        # Jacobi symbol +1: (c / n) = (g / n)^m (h / n)^r is public, so a g of symbol -1 with an h
        # of symbol +1 (a quarter of keys otherwise) would show every plaintext's parity
        if gmpy2.gcd(g, n) == 1 and gmpy2.jacobi(g, n) == 1 and gmpy2.powmod(g, p - 1, p2) != 1:
            break
    while True:
        g0 = mpz(secrets.randbelow(int(n) - 2) + 2)
        if gmpy2.gcd(g0, n) == 1:
            break
    h = gmpy2.powmod(g0, n, n)
    pub = OUPublicKey(n, g, h, pbits - 2, obfuscation_bits)
    return pub, OUPrivateKey(pub, p, q)
