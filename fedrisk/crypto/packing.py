"""Several signed fixed-point values per plaintext, with headroom so that sums cannot overflow.

A :class:`SlotPacking` lays ``n_slots`` signed slots of ``slot_bits`` bits each into one integer::

    M = v_0 + v_1 * 2^k + v_2 * 2^(2k) + ...        (k = slot_bits, v_j signed fixed-point ints)

Adding packed plaintexts (homomorphically: multiplying ciphertexts) adds every slot
independently as long as no slot's running sum leaves ``[-2^(k-1), 2^(k-1))``: a negative slot
simply borrows from the slot above, and :meth:`SlotPacking.unpack_ints` undoes the borrows slot by
slot from the bottom.

Overflow is ruled out by construction, never detected after the fact:

* the slot width comes from the declared bound ``max_abs`` per slot and the maximum number of
  summed terms ``max_terms``: ``k = bitlen(max_terms * B) + 1`` with ``B = floor(max_abs * 2^s) + 1``
  the largest encoded magnitude of one term, so ``|sum| <= max_terms * B < 2^(k-1)``;
* :meth:`SlotPacking.pack` raises :class:`~fedrisk.errors.CryptoError` for any value above its
  slot's ``max_abs`` *before* it is encrypted, and the whole layout must fit the key's
  ``plaintext_bits`` (so the packed integer also stays inside the signed plaintext range);
* :meth:`SlotPacking.check_terms` lets a protocol assert a sum's term count up front.

:func:`shift_sum` (shift-and-add of already-summed ciphertexts, ``c1^(2^W) * c2``) puts several
summed plaintexts into one ciphertext; the caller checks that the shifted sum fits the plaintext.
SecureBoost packs ``(g, h)`` per row with ``max_terms = n_rows`` (any bin sum has at most that
many terms) and combines bin sums through
:class:`~fedrisk.algorithms.vertical.secureboost.row_packing.RowPacking`, which checks the widths
and masks what the decryptor must not read.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import gmpy2
import numpy as np

from fedrisk.crypto import fixed_point, montgomery
from fedrisk.crypto.additive import Ciphertexts, PrivateKey, PublicKey, from_bytes, map_chunks, to_bytes
from fedrisk.crypto.fixed_point import DEFAULT_PRECISION
from fedrisk.errors import CryptoError

__all__ = [
    "SlotPacking",
    "slot_bits_for",
    "encrypt_packed",
    "decrypt_packed",
    "shift_sum",
]


def slot_bits_for(max_abs: float, max_terms: int, precision: int = DEFAULT_PRECISION) -> int:
    """Bits of a signed slot that holds any sum of ``max_terms`` values with ``|x| <= max_abs``.

    Parameters
    ----------
    max_abs : float
        Bound on the magnitude of one term (before fixed-point encoding).
    max_terms : int
        Largest number of terms that will ever be summed into the slot.
    precision : int
        Fractional bits of the fixed-point encoding.
    """
    if not (isinstance(max_abs, (int, float, np.floating, np.integer)) and math.isfinite(max_abs) and max_abs >= 0):
        raise CryptoError(f"slot bound max_abs must be a finite non-negative number, got {max_abs!r}")
    if int(max_terms) < 1:
        raise CryptoError(f"max_terms must be at least 1, got {max_terms!r}")
    one = int(math.floor(math.ldexp(float(max_abs), int(precision)))) + 1
    return (int(max_terms) * one).bit_length() + 1


@dataclass(frozen=True)
class SlotPacking:
    """Layout of ``n_slots`` equal signed slots in one plaintext; build with :meth:`for_sums`.

    Attributes
    ----------
    slot_bits : int
        Width ``k`` of every slot.
    max_abs : tuple of float
        Per-slot bound on one term; :meth:`pack` refuses larger values.
    max_terms : int
        Number of terms any slot sum may have without overflow.
    precision : int
        Fractional bits.
    plaintext_bits : int
        The key's signed plaintext capacity the layout was checked against.
    """

    slot_bits: int
    max_abs: tuple[float, ...]
    max_terms: int
    precision: int
    plaintext_bits: int

    def __post_init__(self) -> None:
        if self.total_bits > self.plaintext_bits:
            raise CryptoError(
                f"{self.n_slots} slots of {self.slot_bits} bits need {self.total_bits} bits but the key holds "
                f"{self.plaintext_bits}; pack fewer values per plaintext, lower the precision or max_terms, or use a larger key"
            )

    @classmethod
    def for_sums(cls, max_abs: float | Sequence[float], max_terms: int, *, plaintext_bits: int,
                 precision: int = DEFAULT_PRECISION) -> "SlotPacking":
        """Layout whose slots hold any sum of up to ``max_terms`` bounded terms.

        Parameters
        ----------
        max_abs : float or sequence of float
            One bound per slot (the number of bounds is the number of slots).
        max_terms : int
            E.g. the number of rows for SecureBoost histograms.
        plaintext_bits : int
            ``key.plaintext_bits`` of the key that will encrypt.
        precision : int
            Fractional bits.

        Raises
        ------
        CryptoError
            If the slots do not fit in ``plaintext_bits``.
        """
        bounds = (float(max_abs),) if np.isscalar(max_abs) else tuple(float(b) for b in max_abs)  # type: ignore[arg-type]
        if not bounds:
            raise CryptoError("a packing needs at least one slot")
        k = max(slot_bits_for(b, max_terms, precision) for b in bounds)
        return cls(k, bounds, int(max_terms), int(precision), int(plaintext_bits))

    @property
    def n_slots(self) -> int:
        return len(self.max_abs)

    @property
    def total_bits(self) -> int:
        """Bits of one packed plaintext (``n_slots * slot_bits``); pass as ``bound_bits`` to decrypt."""
        return self.n_slots * self.slot_bits

    @property
    def max_group(self) -> int:
        """How many packed (summed) plaintexts fit side by side into one plaintext (:func:`shift_sum`)."""
        return self.plaintext_bits // self.total_bits

    def check_terms(self, n_terms: int) -> None:
        """Raise :class:`CryptoError` if a sum of ``n_terms`` packed values could overflow a slot."""
        if n_terms > self.max_terms:
            raise CryptoError(f"summing {n_terms} packed values could overflow: the layout was sized for {self.max_terms}")

    @property
    def slot_bounds(self) -> tuple[int, ...]:
        """Largest magnitude of one encoded term per slot (``floor(max_abs * 2**precision) + 1``)."""
        return tuple(int(math.floor(math.ldexp(b, self.precision))) + 1 for b in self.max_abs)

    def slot_ints(self, values: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
        """The signed fixed-point slot integers :meth:`pack` combines, ``(n, n_slots)`` int64.

        Same checks as :meth:`pack`; ``pack(values)[i] == sum_j out[i, j] << (j * slot_bits)``.
        """
        arr = self._checked(values)
        if max(self.slot_bounds) >= 2**62:
            raise CryptoError("slot values do not fit int64; use pack()")
        out = np.rint(np.ldexp(arr, self.precision)).astype(np.int64)
        return out

    def _checked(self, values: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
        arr = np.asarray(values, dtype=np.float64)
        if arr.ndim == 1:
            arr = arr[None, :]
        if arr.ndim != 2 or arr.shape[1] != self.n_slots:
            raise CryptoError(f"packing expects values of shape (n, {self.n_slots}), got {np.shape(values)}")
        bounds = np.asarray(self.max_abs)
        with np.errstate(invalid="ignore"):
            bad = ~(np.abs(arr) <= bounds)
        if bad.any():
            i, j = map(int, np.argwhere(bad)[0])
            raise CryptoError(f"value {arr[i, j]!r} in row {i}, slot {j} exceeds the slot bound {self.max_abs[j]}; "
                              "clip it or build the packing with a larger max_abs")
        return arr

    def pack(self, values: np.ndarray | Sequence[Sequence[float]]) -> list[int]:
        """Encode rows of ``n_slots`` floats into one signed integer each.

        Parameters
        ----------
        values : array_like
            ``(n_rows, n_slots)`` (or ``(n_slots,)`` for one row).

        Raises
        ------
        CryptoError
            If the shape is wrong or a value is non-finite or above its slot's ``max_abs``.
        """
        arr = self._checked(values)
        k = self.slot_bits
        cols = [fixed_point.encode(arr[:, j], self.precision) for j in range(self.n_slots)]
        out = cols[-1]
        for col in reversed(cols[:-1]):
            out = [(hi << k) + lo for hi, lo in zip(out, col)]
        return out

    def unpack_ints(self, packed: Sequence[int]) -> np.ndarray:
        """Split signed packed integers into slot integers: ``(n, n_slots)`` object array of ints."""
        k = self.slot_bits
        mask, half, full = (1 << k) - 1, 1 << (k - 1), 1 << k
        out = np.empty((len(packed), self.n_slots), dtype=object)
        for i, m in enumerate(packed):
            m = int(m)
            for j in range(self.n_slots):
                low = m & mask
                if low >= half:
                    low -= full
                out[i, j] = low
                m = (m - low) >> k
            if m != 0:
                raise CryptoError(f"packed value {i} has bits above its {self.n_slots} slots: wrong layout or an overflowed sum")
        return out

    def unpack(self, packed: Sequence[int], precision: int | None = None) -> np.ndarray:
        """Split and decode packed integers to floats, shape ``(n, n_slots)``."""
        ints = self.unpack_ints(packed)
        p = self.precision if precision is None else precision
        return fixed_point.decode(ints.ravel().tolist(), p).reshape(ints.shape)


def encrypt_packed(key: PublicKey | PrivateKey, packing: SlotPacking, values: np.ndarray) -> Ciphertexts:
    """Pack rows of values and encrypt them (a :class:`PrivateKey` uses its faster owner path)."""
    return key.encrypt(packing.pack(values))


def decrypt_packed(private_key: PrivateKey, packing: SlotPacking, cts: Sequence[Any]) -> np.ndarray:
    """Decrypt packed ciphertexts and unpack to ``(n, n_slots)`` floats."""
    return packing.unpack(private_key.decrypt(cts, bound_bits=packing.total_bits))


def shift_sum(public_key: PublicKey, cts: Sequence[Any], group: int, shift_bits: int) -> list:
    """Per run ``[c_0, ..., c_{g-1}]`` of ``group`` ciphertexts (the last may be shorter):
    ``c_0 * c_1^(2^W) * ... * c_{g-1}^(2^(W(g-1)))`` with ``W = shift_bits``, i.e. the plaintexts
    shifted by ``j W`` bits and added (Horner form: ``W`` squarings per step).

    The caller checks that the shifted sum fits the plaintext space (as
    :class:`~fedrisk.algorithms.vertical.secureboost.row_packing.RowPacking` does).
    """
    m = public_key.ciphertext_modulus
    cts = list(cts)
    g = int(group)
    if montgomery.AVAILABLE and len(cts) > g:
        # compiled squaring chains on this process's threads (GIL released), whole groups each
        w = public_key.ciphertext_bytes
        groups = [to_bytes(cts[lo:lo + g], w) for lo in range(0, len(cts), g)]
        parts = map_chunks(_shift_task, (int(m), g, int(shift_bits)), groups, threads=True, tasks_per_worker=1)
        return [c for blob in parts for c in from_bytes(blob, w)]
    shift = 1 << int(shift_bits)
    out = []
    for lo in range(0, len(cts), g):
        group_cts = cts[lo : lo + g]
        acc = group_cts[-1]
        for c in reversed(group_cts[:-1]):
            acc = gmpy2.powmod(acc, shift, m) * c % m
        out.append(acc)
    return out


def _shift_task(modulus: int, group: int, shift_bits: int, groups: Sequence[bytes]) -> bytes:
    return montgomery.shift_products(modulus, b"".join(groups), group, shift_bits)
