"""Several rows' ``(g, h)`` per SecureBoost ciphertext, and the feature holder's aligned, masked bin sums.

Why: the label holder's encryption (one OU ``h^r`` per ciphertext) is most of SecureBoost's CPU
at scale, one per row and tree. ``k`` rows per plaintext divide that work, and the gradient bytes
on the wire, by ``k``. The model does not change: every bin sum the label holder reads is the
same integer as with one row per ciphertext.

Layout (``b`` = the ``(g, h)`` packing's slot bits, ``R`` = a row group's width)::

    plaintext = sum_{s < k} (g_s + h_s 2^b) 2^(s R)

Row ``i`` of a tree (its position in the tree's row list) travels in ciphertext ``i // k`` at
position ``s = i % k``; both parties derive this from the row list alone.

What the feature holder H computes: for every output slot ``t`` (node, feature, bin) and position
``s``, ``A[t, s]`` = the product of the ciphertexts whose position-``s`` row falls in ``t``. Group
``s`` of ``A[t, s]`` is the true sum of those rows; its other groups hold the sums of the *other*
rows sharing those ciphertexts (cross terms). Revealing them would split each bin's rows by
position, more than SecureBoost's bin sums, so H

1. aligns and adds, ``q`` slots per ciphertext::

       C = prod_{j < q, s < k} A[t_j, s]^(2^((j k + k - 1 - s) R))

   which puts every position's true sum of slot ``t_j`` in group ``j k + k - 1`` (they add up to
   the bin sum the protocol reveals) and the cross terms in the other groups: ``q k + k - 1``
   groups in all, :func:`RowPacking.groups`;
2. masks every other group: ``C * Enc(sum_gamma mu_gamma 2^(gamma R))`` with ``mu_gamma`` drawn
   uniformly from ``[0, 2^(B + sigma))`` by H's CSPRNG, where ``2^B`` bounds a group's cross
   terms (at most ``2k`` sums of one ``(g, h)`` group each: ``B = 2b + ceil(log2 2k)``) and
   ``sigma = 40``: the masked value is within statistical distance ``2^-sigma`` of the mask alone.
   The fresh encryption also re-randomises ``C``.

``R = B + sigma + 2`` leaves each masked group inside its signed ``R``-bit range, so the label
holder decodes the groups exactly from the bottom and reads only groups ``j k + k - 1``. With
``k = 1`` there are no cross terms: ``R = 2b``, no mask: bin sums side by side
(:func:`fedrisk.crypto.packing.shift_sum`).

Cost: ``k`` is bounded by ``(2k - 1) R <= plaintext_bits`` (the span of one aligned slot): 3 rows
per ciphertext at 2048-bit OU (681 plaintext bits, ``b = 36`` for 285k rows: ``R = 117``, 585
bits). In exchange the label holder decrypts ``q`` bin sums per ciphertext instead of
``plaintext_bits // 2b`` (1 instead of 9 at ``k = 3``) and H spends one public-key encryption
(the mask) and ``(q k - 1) R`` squarings per sent ciphertext. That is a fixed cost per node and
bin, against the ``(k - 1) / k`` of the label holder's encryptions saved per row:
:func:`choose_rows` weighs the two (measured constants) and keeps one row per ciphertext where
the rows are too few to pay for it.
"""
from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from fedrisk.errors import CryptoError, ProtocolError

#: statistical hiding of every cross-term group (bits)
SIGMA = 40
#: most rows per ciphertext considered (more never fit a 2048- or 3072-bit OU key's plaintext)
MAX_ROWS = 8

# measured per-operation CPU (µs, 2048-bit OU on the compiled kernel; docs/scale.md), for choose_rows
_US_OBFUSCATOR = 13.0      # the label holder's h^r (CRT, fixed-base tables), once per ciphertext
_US_DECRYPT = 430.0        # one decryption at the label holder
_US_SQUARE = 1.07          # one product modulo n at the feature holder
_US_MASK = 100.0           # one mask encryption at the feature holder (compiled fixed-base tables)


@dataclass(frozen=True)
class RowPacking:
    """``rows`` rows' ``(g, h)`` per plaintext; see the module docstring for the layout.

    Attributes
    ----------
    slot_bits : int
        ``b``: width of the ``g`` and ``h`` slots of one row (from the job's ``(g, h)`` packing).
    rows : int
        ``k``: rows per ciphertext.
    plaintext_bits : int
        The key's signed plaintext capacity.
    """

    slot_bits: int
    rows: int
    plaintext_bits: int

    def __post_init__(self) -> None:
        if not 1 <= self.rows <= MAX_ROWS:
            raise CryptoError(f"rows per ciphertext must be in [1, {MAX_ROWS}], got {self.rows}")
        if self.groups(1) * self.group_bits > self.plaintext_bits:
            raise CryptoError(f"{self.rows} rows of {2 * self.slot_bits}-bit (g, h) need {self.groups(1) * self.group_bits} "
                              f"bits per aligned bin sum; the key holds {self.plaintext_bits}")

    # -- layout --------------------------------------------------------------------------------
    @property
    def mask_bits(self) -> int:
        """Masks are uniform in ``[0, 2^mask_bits)``: cross-term bound ``B`` plus ``SIGMA``."""
        return 2 * self.slot_bits + math.ceil(math.log2(2 * self.rows)) + SIGMA

    @property
    def group_bits(self) -> int:
        """``R``: one row group's width (``2b`` with one row: no cross terms to mask)."""
        return 2 * self.slot_bits if self.rows == 1 else self.mask_bits + 2

    @property
    def offsets(self) -> tuple[int, ...]:
        """Bit offset of each slot of a fresh plaintext: ``g_s`` at ``s R``, ``h_s`` at ``s R + b``."""
        R, b = self.group_bits, self.slot_bits
        return tuple(o for s in range(self.rows) for o in (s * R, s * R + b))

    def groups(self, per_ciphertext: int) -> int:
        """Row groups spanned by ``per_ciphertext`` aligned slots: ``q k + k - 1``."""
        return per_ciphertext * self.rows + self.rows - 1

    @property
    def per_ciphertext(self) -> int:
        """``q``: output slots (bin sums) per ciphertext the feature holder sends."""
        k, R = self.rows, self.group_bits
        return max(1, (self.plaintext_bits // R - k + 1) // k)

    def real_groups(self, q: int) -> np.ndarray:
        """Indices of the groups holding slot sums (the rest are masked cross terms)."""
        return np.arange(q) * self.rows + self.rows - 1

    # -- label holder: plaintext slots of fresh ciphertexts -------------------------------------
    def ciphertext_slots(self, gh_ints: np.ndarray) -> np.ndarray:
        """``(n_rows, 2)`` fixed-point ``(g, h)`` integers -> ``(ceil(n_rows / k), 2k)`` slot integers
        (row ``i`` at ciphertext ``i // k``, position ``i % k``; a last partial ciphertext's empty
        positions are 0), for encryption at :attr:`offsets`."""
        n, k = len(gh_ints), self.rows
        n_ct = -(-n // k)
        out = np.zeros((n_ct * k, 2), dtype=np.int64)
        out[:n] = gh_ints
        return out.reshape(n_ct, 2 * k)

    def packed(self, gh_ints: np.ndarray) -> list[int]:
        """The plaintext integers of :meth:`ciphertext_slots` (keys without slot encryption)."""
        offs = self.offsets
        return [sum(int(v) << o for v, o in zip(row, offs)) for row in self.ciphertext_slots(gh_ints).tolist()]

    # -- feature holder: aligned, masked sums ----------------------------------------------------
    def combine(self, public_key: Any, sums: Sequence[Any], count: int) -> list:
        """Aligned, masked ciphertexts of ``count`` output slots from per-position sums.

        ``sums[s * count + t]`` = product of the ciphertexts whose position-``s`` row falls in
        slot ``t``. Returns ``ceil(count / q)`` ciphertexts, slot ``t`` in ciphertext ``t // q``.
        """
        from fedrisk.crypto.packing import shift_sum

        k, q = self.rows, self.per_ciphertext
        if len(sums) != k * count:
            raise CryptoError(f"{len(sums)} per-position sums for {count} slots of {k} positions")
        n_ct = -(-count // q)
        one = _identity(sums)
        # run of q k terms per ciphertext, lowest shift first: term o is slot t_j, position s with
        # j = o // k, s = k - 1 - o % k (shift o groups puts its group s at j k + k - 1)
        order = []
        for c in range(n_ct):
            for o in range(q * k):
                t, s = c * q + o // k, k - 1 - o % k
                order.append(sums[s * count + t] if t < count else one)
        out = shift_sum(public_key, order, q * k, self.group_bits)
        if k == 1:
            return out
        masks = self._encrypted_masks(public_key, n_ct, q)
        m = public_key.ciphertext_modulus
        return [c * r % m for c, r in zip(out, masks)]

    def cross_groups(self, q: int) -> list[int]:
        """Groups of a :meth:`combine` ciphertext that hold cross terms (masked)."""
        real = set(self.real_groups(q).tolist())
        return [g for g in range(self.groups(q)) if g not in real]

    def _masks(self, n_ct: int, q: int) -> list[int]:
        """One plaintext per ciphertext: a fresh uniform ``mask_bits``-bit value in every cross-term group."""
        R, mb = self.group_bits, self.mask_bits
        return [sum(secrets.randbits(mb) << (g * R) for g in self.cross_groups(q)) for _ in range(n_ct)]

    def _encrypted_masks(self, public_key: Any, n_ct: int, q: int) -> list:
        """``Enc(mask)`` for :meth:`_masks`' plaintexts: OU keys on the compiled kernel use
        fixed-base tables of ``g`` per mask digit and of ``h`` (:func:`_mask_tables`, ~60 products
        each instead of ~75 gmpy2 ones), with the same distribution: uniform mask digits and
        uniform ``obfuscation_bits``-bit ``r``, both from the OS CSPRNG."""
        from fedrisk.crypto import montgomery

        if not (montgomery.AVAILABLE and getattr(public_key, "scheme", None) == "ou"):
            return public_key.encrypt(self._masks(n_ct, q))
        from fedrisk.crypto.additive import from_bytes, random_exponent_digits

        table, per_group, r_rows = _mask_tables(public_key, self, q)
        w, cross = _MASK_WINDOW, self.cross_groups(q)
        mu = random_exponent_digits(n_ct * len(cross), self.mask_bits, w).reshape(n_ct, len(cross) * per_group)
        r = random_exponent_digits(n_ct, public_key.obfuscation_bits, w)
        digits = np.hstack([mu, r])
        idx = digits + (np.arange(digits.shape[1], dtype=np.int64) << w)[None, :]
        idx[digits == 0] = -1
        return from_bytes(montgomery.gather_products(table, idx), public_key.ciphertext_bytes)

    # -- label holder: reading the slot sums ------------------------------------------------------
    def slot_sums(self, private_key: Any, cts: Sequence[Any], count: int, precision: int) -> np.ndarray:
        """Decrypt :meth:`combine`'s ciphertexts: ``(count, 2)`` float ``(g, h)`` sums."""
        q = self.per_ciphertext
        if len(cts) != -(-count // q):
            raise ProtocolError(f"{len(cts)} ciphertexts cannot hold {count} bin sums at {q} per ciphertext")
        R, b, n_groups = self.group_bits, self.slot_bits, self.groups(q)
        plain = private_key.decrypt(cts, bound_bits=n_groups * R)
        real = self.real_groups(q).tolist()
        gmask, ghalf, gfull = (1 << R) - 1, 1 << (R - 1), 1 << R
        smask, shalf, sfull = (1 << b) - 1, 1 << (b - 1), 1 << b
        out = np.zeros((len(cts) * q, 2), dtype=np.int64)
        for i, m in enumerate(plain):
            m = int(m)
            groups = []
            for _ in range(n_groups):
                low = m & gmask
                if low >= ghalf:
                    low -= gfull
                groups.append(low)
                m = (m - low) >> R
            if m != 0:
                raise ProtocolError("a bin-sum ciphertext has bits above its layout: wrong layout or an overflowed sum")
            for j, gi in enumerate(real):
                v = groups[gi]
                lo = v & smask
                if lo >= shalf:
                    lo -= sfull
                hi = (v - lo) >> b
                if not -shalf <= hi < shalf:
                    raise ProtocolError("a bin sum is outside its slot: wrong layout or an overflowed sum")
                out[i * q + j] = (lo, hi)
        return np.ldexp(out[:count].astype(np.float64), -precision)


#: window (bits) of the mask encryption's fixed-base tables: 4,096 entries per digit row
_MASK_WINDOW = 12
_MASK_TABLES: dict[tuple, tuple] = {}


def _mask_tables(public_key: Any, rp: RowPacking, q: int) -> tuple[Any, int, int]:
    """One power table (compiled kernel, modulo ``n``) for a layout's masks, cached per process:
    rows ``g^(2^(gamma R + w i))`` for every cross group ``gamma`` and digit ``i`` of a mask, then
    rows ``h^(2^(w i))`` for the digits of ``r``; each row holds its base's powers ``0 .. 2^w - 1``.
    Returns ``(table, digit rows per group, digit rows of r)`` (~60 MB at 2048 bits, ~0.3 CPU-s)."""
    import gmpy2

    from fedrisk.crypto import montgomery

    n, w = int(public_key.n), _MASK_WINDOW
    cross = tuple(rp.cross_groups(q))
    key = (n, int(public_key.g), int(public_key.h), rp.group_bits, rp.mask_bits, cross, public_key.obfuscation_bits)
    hit = _MASK_TABLES.get(key)
    if hit is None:
        per_group, r_rows = -(-rp.mask_bits // w), -(-public_key.obfuscation_bits // w)
        bases = [gmpy2.powmod(public_key.g, 1 << (g * rp.group_bits + w * i), n) for g in cross for i in range(per_group)]
        bases += [gmpy2.powmod(public_key.h, 1 << (w * i), n) for i in range(r_rows)]
        table = montgomery.PowerTable.concat([montgomery.power_table(n, int(b), 1 << w) for b in bases])
        if len(_MASK_TABLES) >= 2:
            _MASK_TABLES.pop(next(iter(_MASK_TABLES)))
        hit = _MASK_TABLES[key] = (table, per_group, r_rows)
    return hit


def _identity(sums: Sequence[Any]) -> Any:
    """The ciphertext of 0 without randomness (1), in the sums' own integer type."""
    from gmpy2 import mpz

    return mpz(1) if not sums else type(sums[0])(1)


def max_rows(slot_bits: int, plaintext_bits: int) -> int:
    """Most rows per ciphertext a key of ``plaintext_bits`` holds for ``slot_bits``-bit ``(g, h)`` slots."""
    best = 1
    for k in range(2, MAX_ROWS + 1):
        try:
            RowPacking(slot_bits, k, plaintext_bits)
        except CryptoError:
            break
        best = k
    return best


def choose_rows(slot_bits: int, plaintext_bits: int, rows_per_tree: int, slots_per_node: int,
                nodes_per_tree: int, requested: int = 0) -> int:
    """Rows per ciphertext for a job: ``requested`` if set (checked), else the cheapest by the cost model.

    The label holder's saving grows with the rows per tree (one ``h^r`` per ciphertext), the
    overhead with the bin sums per tree (decryptions, masks and squarings per sent ciphertext):
    ``rows_per_tree * 13 / k`` against ``nodes * slots * (430 + 60 + (q k - 1) R 1.07) / q`` µs
    (1 and no mask at ``k = 1``). Small jobs keep one row per ciphertext.
    """
    top = max_rows(slot_bits, plaintext_bits)
    if requested:
        if not 1 <= requested <= top:
            raise CryptoError(f"rows_per_ciphertext = {requested} does not fit this key: 1 to {top} rows of "
                              f"{2 * slot_bits}-bit (g, h) fit its {plaintext_bits} plaintext bits")
        return int(requested)

    def cost(k: int) -> float:
        rp = RowPacking(slot_bits, k, plaintext_bits)
        q = rp.per_ciphertext
        per_ct = _US_DECRYPT + (q * k - 1) * rp.group_bits * _US_SQUARE + (_US_MASK if k > 1 else 0.0)
        return rows_per_tree * _US_OBFUSCATOR / k + nodes_per_tree * slots_per_node * per_ct / q

    return min(range(1, top + 1), key=lambda k: (cost(k), k))
