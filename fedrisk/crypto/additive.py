"""One interface for additively homomorphic encryption (Paillier, Okamoto-Uchiyama), and its kernels.

Protocols (SecureBoost, vertical LR) are written against :class:`PublicKey` / :class:`PrivateKey`
and pick a scheme with :func:`generate_keypair`; they never touch a scheme module directly.

Ciphertexts are ``gmpy2.mpz`` values in ``[1, N)`` where ``N`` is the scheme's ciphertext modulus
(``n**2`` for Paillier, ``n`` for OU); a ciphertext vector is a plain ``list``. Homomorphic
operations are the same for both schemes::

    Enc(a) * Enc(b) mod N = Enc(a + b)        (add, sum, bin_sums)
    Enc(a) ** k     mod N = Enc(k * a)        (mul_scalar; negative k through the inverse)

Plaintexts are signed integers: ``encrypt`` accepts any ``m`` with ``|m| < 2**plaintext_bits`` and
``decrypt`` returns the signed value, as long as every homomorphic result also stays in that
range (the scheme's plaintext modulus wraps silently otherwise; :mod:`fedrisk.crypto.packing`
sizes slots so that it cannot). Floats go through :mod:`fedrisk.crypto.fixed_point`.

Wire form: a ciphertext vector is :class:`fedrisk.transport.codec.BigInts` with
``width=ciphertext_bytes`` (every ciphertext the same size, so sizes leak nothing); a public key
is a dict of ints and strings (:meth:`PublicKey.to_wire`, :func:`public_key_from_wire`). Private
keys never have a wire form.

Parallelism: batch kernels are pure functions over chunks of ints/bytes. Above a size threshold
they run in a lazily created module-level process pool (``spawn``, one worker per usable core,
``FEDRISK_WORKERS`` overrides; the pool is :mod:`fedrisk.crypto.workers`, shared with PSI); below it they run inline. Public-key work (encryption,
histograms) sends workers only public parameters and ciphertext bytes. Decryption runs in a thread
pool instead: ``gmpy2.powmod_base_list`` releases the GIL, so the private key never leaves the
process — except when the party computes on its own Ray cluster (``compute = "ray"``,
:func:`fedrisk.crypto.workers.use_backend`): then every batch kernel, decryption included, runs
there, and that cluster is part of the party's trust boundary. As with any spawned pool, a script using these kernels must guard its entry point with
``if __name__ == "__main__":``.
"""
from __future__ import annotations

import abc
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, ClassVar, Iterable, Sequence

import gmpy2
import numpy as np
from gmpy2 import mpz

from fedrisk.crypto import fixed_point, montgomery
from fedrisk.crypto.fixed_point import DEFAULT_PRECISION
from fedrisk.crypto.workers import (broken_pool_error, kernel_pool, process_pool, shutdown_pools, thread_pool,
                                    worker_count)
from fedrisk.errors import CodecError, CryptoError
from fedrisk.transport.codec import BigInts

__all__ = [
    "PublicKey",
    "PrivateKey",
    "Ciphertexts",
    "FixedBaseTable",
    "generate_keypair",
    "public_key_from_wire",
    "worker_count",
    "shutdown_pools",
    "bin_sums_kernel",
    "to_bytes",
    "from_bytes",
]

#: A vector of ciphertexts: a list of ``gmpy2.mpz``.
Ciphertexts = list

ONE = mpz(1)

#: Batch sizes (items) at and above which kernels use the pools.
PARALLEL_ENCRYPT_AT = 2_000
PARALLEL_DECRYPT_AT = 64
PARALLEL_MUL_AT = 512
PARALLEL_HISTOGRAM_AT = 50_000  # rows x features


def decrypt_in_threads(count: int, gmpy2_at: int) -> bool:
    """Whether a decryption batch of ``count`` goes to the thread pool. Each decryption is ~0.5 ms
    or more at 2048 bits: with the compiled kernel (GIL released) a handful is worth both cores;
    gmpy2 releases the GIL only in part, so there only batches of ``gmpy2_at`` or more."""
    at = 2 * worker_count() if montgomery.AVAILABLE else gmpy2_at
    return worker_count() > 1 and count >= at


# ---------------------------------------------------------------------------------------------
# Byte conversion (the process-pool and wire boundary)
# ---------------------------------------------------------------------------------------------
def to_bytes(values: Iterable[Any], width: int) -> bytes:
    """Fixed-width big-endian bytes of non-negative integers, concatenated."""
    return b"".join(mpz(v).to_bytes(width, "big") for v in values)


def from_bytes(blob: bytes, width: int) -> list:
    """Inverse of :func:`to_bytes`: a list of ``mpz``."""
    fb = mpz.from_bytes
    return [fb(blob[i : i + width], "big") for i in range(0, len(blob), width)]


# ---------------------------------------------------------------------------------------------
# Fixed-base exponentiation
# ---------------------------------------------------------------------------------------------
class FixedBaseTable:
    """Precomputed powers of one base for fast ``base ** e mod modulus`` with ``e < 2**exp_bits``.

    Row ``i`` holds ``base ** (d * 2**(window*i))`` for every ``window``-bit digit ``d``, so a power
    costs one modular multiplication per non-zero digit of the exponent (19 for a 224-bit exponent
    with 12-bit windows) instead of ~1.5 per exponent bit for square-and-multiply. Rows are built
    on first use, so a table sized for a 680-bit plaintext space costs nothing for the rows small
    plaintexts never touch. Memory per built row: ``2**window`` residues (12 bits: ~1 MB at 2048
    bits).

    Notes
    -----
    Not constant time (neither is gmpy2): the number of multiplications depends on how many
    exponent digits are zero. Exponents here are random obfuscation values or plaintexts held by
    the party computing them, and timing is visible only on that party's own machine.
    """

    __slots__ = ("modulus", "window", "n_rows", "_rows", "_base")

    def __init__(self, base: int, modulus: int, exp_bits: int, window: int = 8) -> None:
        if not 1 <= window <= 16:
            raise CryptoError(f"fixed-base window {window} must be 1..16 bits")
        m = mpz(modulus)
        self.modulus = m
        self.window = int(window)
        self.n_rows = max(1, -(-int(exp_bits) // self.window))
        self._rows: list[list[Any] | None] = [None] * self.n_rows
        self._base = mpz(base) % m

    def _row(self, i: int) -> list[Any]:
        row = self._rows[i]
        if row is None:
            m = self.modulus
            b = self._base
            for _ in range(i * self.window):
                b = b * b % m
            row = [ONE, b]
            x = b
            for _d in range(2, 1 << self.window):
                x = x * b % m
                row.append(x)
            self._rows[i] = row
        return row

    def pow(self, e: int, start: Any = ONE) -> Any:
        """``start * base ** e mod modulus`` for ``0 <= e < 2**(window * n_rows)``."""
        e = int(e)
        if e < 0 or e.bit_length() > self.window * self.n_rows:
            raise CryptoError(f"exponent of {e.bit_length()} bits is outside this table's range")
        m, w, mask, rows = self.modulus, self.window, (1 << self.window) - 1, self._rows
        acc = start
        i = 0
        while e:
            d = e & mask
            if d:
                acc = acc * (rows[i] or self._row(i))[d] % m
            e >>= w
            i += 1
        return acc

    def digit_rows(self, count: int) -> list[list[Any]]:
        """The first ``count`` rows (built if needed): ``rows[i][d] = base ** (d * 2**(window*i))``."""
        if not 0 <= count <= self.n_rows:
            raise CryptoError(f"this table has {self.n_rows} rows, {count} asked")
        return [self._rows[i] or self._row(i) for i in range(count)]

    def random_digits(self, count: int, exp_bits: int) -> np.ndarray:
        """``count`` fresh uniform exponents in ``[0, 2**exp_bits)`` (OS CSPRNG, one call), as
        ``(count, ceil(exp_bits / window))`` window digits, least significant first."""
        if -(-int(exp_bits) // self.window) > self.n_rows:
            raise CryptoError(f"a {exp_bits}-bit exponent is outside this table's range")
        return random_exponent_digits(count, exp_bits, self.window)

    def pow_bytes(self, e_le: bytes, start: Any = ONE) -> Any:
        """Same, with the exponent given as little-endian bytes."""
        return self.pow(int.from_bytes(e_le, "little"), start)


def random_exponent_digits(count: int, exp_bits: int, window: int) -> np.ndarray:
    """``count`` fresh uniform exponents in ``[0, 2**exp_bits)`` from the OS CSPRNG (one call), as
    ``(count, ceil(exp_bits / window))`` int64 window digits, least significant first."""
    import secrets

    nbytes = (int(exp_bits) + 7) // 8
    return exponent_digits(secrets.token_bytes(count * nbytes), count, exp_bits, window)


def exponent_digits(raw: bytes, count: int, exp_bits: int, window: int) -> np.ndarray:
    """Split ``count`` little-endian exponents of ``ceil(exp_bits / 8)`` bytes each (bits above
    ``exp_bits`` ignored) into ``window``-bit digits, least significant first (see
    :func:`random_exponent_digits`)."""
    w = int(window)
    n_dig = -(-int(exp_bits) // w)
    nbytes = (int(exp_bits) + 7) // 8
    if w in (8, 16, 32) and n_dig * w == int(exp_bits):
        # whole-byte digits: the little-endian words are the digits (no bit unpacking)
        return np.frombuffer(raw, dtype=f"<u{w // 8}", count=count * n_dig).reshape(count, n_dig).astype(np.int64)
    raw = np.frombuffer(raw, dtype=np.uint8, count=count * nbytes).reshape(count, nbytes)
    bits = np.unpackbits(raw, axis=1, count=int(exp_bits), bitorder="little")
    if n_dig * w != exp_bits:
        bits = np.pad(bits, ((0, 0), (0, n_dig * w - int(exp_bits))))
    return bits.reshape(count, n_dig, w).astype(np.int64) @ (np.int64(1) << np.arange(w, dtype=np.int64))


_TABLES: dict[tuple, FixedBaseTable] = {}


def fixed_base_table(base: int, modulus: int, exp_bits: int, window: int = 8) -> FixedBaseTable:
    """A per-process cached :class:`FixedBaseTable` (a few keys at a time; tables are large)."""
    key = (int(base), int(modulus), int(exp_bits), int(window))
    t = _TABLES.get(key)
    if t is None:
        if len(_TABLES) >= 8:
            _TABLES.pop(next(iter(_TABLES)))
        t = _TABLES[key] = FixedBaseTable(base, modulus, exp_bits, window)
    return t


# ---------------------------------------------------------------------------------------------
# Pools: one per process, shared with PSI (fedrisk.crypto.workers)
# ---------------------------------------------------------------------------------------------
_process_pool = process_pool
_thread_pool = thread_pool
_kernel_pool = kernel_pool


def _chunks(n: int, parts: int, minimum: int = 1) -> list[tuple[int, int]]:
    size = max(minimum, -(-n // max(1, parts)))
    return [(lo, min(n, lo + size)) for lo in range(0, n, size)]


def map_chunks(fn: Callable[..., Any], common: tuple, items: Sequence[Any], *, threads: bool = False,
               tasks_per_worker: int = 2) -> list[Any]:
    """Run ``fn(*common, items[lo:hi])`` over chunks in a pool; results in chunk order.

    Parameters
    ----------
    fn : callable
        A module-level (picklable) function.
    common : tuple
        Arguments shared by every chunk (public parameters, or secrets when ``threads``).
    items : sequence
        What is split into chunks.
    threads : bool
        Use the in-process thread pool (for GIL-releasing kernels) instead of processes. When
        the party computes on a cluster (``compute = "ray"``) both kinds go to the cluster, and
        ``common`` (secrets included) goes with them: the cluster is inside the party's trust
        boundary (docs/ray.md).
    """
    # the party's cluster when it computes on one (fedrisk.crypto.workers.use_backend), else local
    pool = _kernel_pool(threads)
    spans = _chunks(len(items), worker_count() * tasks_per_worker)
    futs = [pool.submit(fn, *common, items[lo:hi]) for lo, hi in spans]
    try:
        return [f.result() for f in futs]
    except BrokenProcessPool:
        raise broken_pool_error() from None


# ---------------------------------------------------------------------------------------------
# Histogram kernel
# ---------------------------------------------------------------------------------------------
def bin_sums_kernel(modulus: Any, cts: Sequence[Any], bins: np.ndarray, n_bins: int) -> list[list[Any]]:
    """Per-feature, per-bin products of ciphertexts (homomorphic sums), single-threaded.

    Parameters
    ----------
    modulus : int
        Ciphertext modulus ``N``.
    cts : sequence of mpz
        One ciphertext per row.
    bins : numpy.ndarray
        ``(n_rows, n_features)`` bin index per row and feature, each in ``[0, n_bins)``.
    n_bins : int

    Returns
    -------
    list of list of mpz
        ``out[f][b]``: product of ``cts[i]`` over rows with ``bins[i, f] == b``; ``1`` (the
        noiseless encryption of zero) for an empty bin.
    """
    m = mpz(modulus)
    out = []
    for f in range(bins.shape[1]):
        acc = [ONE] * n_bins
        for b, c in zip(bins[:, f].tolist(), cts):
            acc[b] = acc[b] * c % m
        out.append(acc)
    return out


def _bin_sums_task(modulus: int, width: int, n_bins: int, parts: Sequence[tuple[bytes, np.ndarray]]) -> bytes:
    """Pool task: bin sums over one or more row chunks (ciphertext bytes + bin array), as bytes."""
    m = mpz(modulus)
    total: list[list[Any]] | None = None
    for blob, bins in parts:
        sums = bin_sums_kernel(m, from_bytes(blob, width), bins, n_bins)
        if total is None:
            total = sums
        else:
            total = [[x * y % m for x, y in zip(a, b)] for a, b in zip(total, sums)]
    return to_bytes((c for row in (total or []) for c in row), width)


def _grouped_task(modulus: int, n_groups: int, parts: Sequence[tuple[bytes, np.ndarray, np.ndarray]]) -> bytes:
    """Thread task for the compiled kernel: grouped products of each part, multiplied together."""
    return montgomery.multiply_vectors(
        modulus, [montgomery.grouped_products(modulus, blob, which, group, n_groups) for blob, which, group in parts],
        n_groups)


def _mul_task(modulus: int, width: int, pairs: Sequence[tuple[bytes, int]]) -> bytes:
    m = mpz(modulus)
    pw = gmpy2.powmod
    return b"".join(pw(mpz.from_bytes(c, "big"), k, m).to_bytes(width, "big") for c, k in pairs)


# ---------------------------------------------------------------------------------------------
# The interface
# ---------------------------------------------------------------------------------------------
class PublicKey(abc.ABC):
    """Public half of an additively homomorphic scheme: encrypt and compute on ciphertexts.

    Subclasses set :attr:`scheme` and implement :meth:`encrypt`, :meth:`to_wire`,
    :meth:`from_wire`, :attr:`ciphertext_modulus` and :attr:`plaintext_bits`.
    """

    scheme: ClassVar[str] = ""

    # -- scheme-specific -----------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def ciphertext_modulus(self) -> Any:
        """``N``: ciphertexts live in ``[1, N)`` and multiply modulo ``N``."""

    @property
    @abc.abstractmethod
    def plaintext_bits(self) -> int:
        """Every signed plaintext with ``|m| < 2**plaintext_bits`` encrypts and decrypts exactly."""

    @property
    @abc.abstractmethod
    def security_bits(self) -> int:
        """Estimated classical security level of this key (NIST SP 800-57 style)."""

    @abc.abstractmethod
    def encrypt(self, plaintexts: Sequence[int] | np.ndarray) -> Ciphertexts:
        """Encrypt signed integers (``|m| < 2**plaintext_bits``); raises CryptoError outside it."""

    @abc.abstractmethod
    def to_wire(self) -> dict:
        """A dict of ints/strings for :func:`fedrisk.transport.codec.encode`."""

    @classmethod
    @abc.abstractmethod
    def from_wire(cls, data: dict, *, min_bits: int = 2048) -> "PublicKey":
        """Rebuild and validate a key from :meth:`to_wire` output; raises CryptoError."""

    # -- shared ---------------------------------------------------------------------------------
    @property
    def ciphertext_bytes(self) -> int:
        """Bytes per ciphertext on the wire."""
        return (int(self.ciphertext_modulus).bit_length() + 7) // 8

    def encrypt_floats(self, values: np.ndarray | Sequence[float], precision: int = DEFAULT_PRECISION) -> Ciphertexts:
        """Encrypt floats through signed fixed-point encoding (``round(x * 2**precision)``).

        Parameters
        ----------
        values : array_like of float
            Flattened in C order.
        precision : int
            Fractional bits; decrypt with the same value (or the sum of precisions after
            :meth:`mul_scalar` by an encoded scalar).
        """
        return self.encrypt(fixed_point.encode(values, precision))

    def add(self, a: Sequence[Any], b: Sequence[Any]) -> Ciphertexts:
        """Element-wise ``Enc(a_i + b_i)``."""
        if len(a) != len(b):
            raise CryptoError(f"cannot add ciphertext vectors of lengths {len(a)} and {len(b)}")
        m = self.ciphertext_modulus
        return [x * y % m for x, y in zip(a, b)]

    def add_many(self, vectors: Sequence[Sequence[Any]]) -> Ciphertexts:
        """Element-wise sum of several equally long ciphertext vectors."""
        if not vectors:
            raise CryptoError("add_many needs at least one ciphertext vector")
        out = list(vectors[0])
        for v in vectors[1:]:
            out = self.add(out, v)
        return out

    def neg(self, cts: Sequence[Any]) -> Ciphertexts:
        """Element-wise ``Enc(-a_i)`` (modular inverse)."""
        m = self.ciphertext_modulus
        return [gmpy2.invert(c, m) for c in cts]

    def sub(self, a: Sequence[Any], b: Sequence[Any]) -> Ciphertexts:
        """Element-wise ``Enc(a_i - b_i)``."""
        return self.add(a, self.neg(b))

    def add_plain(self, cts: Sequence[Any], plaintexts: Sequence[int]) -> Ciphertexts:
        """Element-wise ``Enc(a_i + k_i)`` for signed integers ``k_i`` (adds fresh encryptions)."""
        return self.add(cts, self.encrypt(plaintexts))

    def mul_scalar(self, cts: Sequence[Any], scalars: int | Sequence[int] | np.ndarray) -> Ciphertexts:
        """Element-wise ``Enc(k_i * a_i)`` for signed integer scalars (one int broadcasts).

        Notes
        -----
        The result is not re-randomised: ``Enc(a)**k`` is a deterministic function of the input
        ciphertext, so call :meth:`rerandomize` before sending it to anyone who saw ``Enc(a)``.
        Cost: one modular exponentiation with a ``|k|``-bit exponent per element.
        """
        m = self.ciphertext_modulus
        if isinstance(scalars, (int, np.integer)):
            k = int(scalars)
            return gmpy2.powmod_base_list(list(cts), k, m) if k >= 0 else self.neg(gmpy2.powmod_base_list(list(cts), -k, m))
        ks = [int(k) for k in (scalars.tolist() if isinstance(scalars, np.ndarray) else scalars)]
        if len(ks) != len(cts):
            raise CryptoError(f"mul_scalar got {len(ks)} scalars for {len(cts)} ciphertexts")
        if len(ks) >= PARALLEL_MUL_AT and worker_count() > 1:
            w = self.ciphertext_bytes
            pairs = [(int(c).to_bytes(w, "big"), k) for c, k in zip(cts, ks)]
            return [c for blob in map_chunks(_mul_task, (int(m), w), pairs) for c in from_bytes(blob, w)]
        pw = gmpy2.powmod
        return [pw(c, k, m) for c, k in zip(cts, ks)]

    def sum(self, cts: Sequence[Any]) -> Any:
        """``Enc(sum a_i)``: one ciphertext (``1``, a noiseless zero, for an empty input)."""
        return self.bin_sums(cts, np.zeros(len(cts), dtype=np.int64), 1)[0]

    def rerandomize(self, cts: Sequence[Any]) -> Ciphertexts:
        """Multiply each ciphertext by a fresh encryption of zero (unlinkable, same plaintext)."""
        return self.add(cts, self.encrypt([0] * len(cts)))

    def bin_sums(self, cts: Sequence[Any], bin_index: np.ndarray | Sequence[int], n_bins: int,
                 rows: np.ndarray | Sequence[int] | None = None) -> Any:
        """Encrypted sum per bin: the SecureBoost histogram kernel.

        Parameters
        ----------
        cts : sequence of mpz
            One ciphertext per row (e.g. packed ``(g, h)``).
        bin_index : array_like of int
            ``(n_rows,)`` for one feature, or ``(n_rows, n_features)`` for many at once.
        n_bins : int
            Bins per feature; every index must lie in ``[0, n_bins)``.
        rows : array_like of int, optional
            Row subset (e.g. the rows in a tree node); default all rows.

        Returns
        -------
        list of mpz or list of list of mpz
            ``n_bins`` ciphertexts for a 1-D ``bin_index``, else one such list per feature.
            An empty bin holds ``1``, the noiseless encryption of zero.

        Notes
        -----
        Cost is one modular multiplication per (row, feature), spread over the process pool
        when ``rows * features`` is large. The sums are not re-randomised: the key holder who
        encrypted the rows could in principle test which of its ciphertexts a sum contains, so
        protocols that must hide row membership call :meth:`rerandomize` (or add a masked
        encryption) before sending.
        """
        bins = np.asarray(bin_index)
        one_d = bins.ndim == 1
        if one_d:
            bins = bins[:, None]
        if bins.ndim != 2 or bins.shape[0] != len(cts):
            raise CryptoError(f"bin_index has shape {np.shape(bin_index)}; expected ({len(cts)},) or ({len(cts)}, n_features)")
        if not np.issubdtype(bins.dtype, np.integer):
            raise CryptoError(f"bin_index must be integers, got dtype {bins.dtype}")
        n_bins = int(n_bins)
        if bins.size and (bins.min() < 0 or bins.max() >= n_bins):
            raise CryptoError(f"bin indices must lie in [0, {n_bins}), found [{bins.min()}, {bins.max()}]")
        if rows is not None:
            idx = np.asarray(rows, dtype=np.int64)
            bins = bins[idx]
            cts = [cts[i] for i in idx.tolist()]
        m = self.ciphertext_modulus
        n, f = bins.shape
        if montgomery.AVAILABLE and n:
            flat = self._bin_sums_native(cts, bins, n_bins)
            out = [flat[j * n_bins:(j + 1) * n_bins] for j in range(f)]
        elif n * f >= PARALLEL_HISTOGRAM_AT and worker_count() > 1 and n >= 2 * worker_count():
            w = self.ciphertext_bytes
            bins = np.ascontiguousarray(bins, dtype=np.int32 if n_bins < 2**31 else np.int64)
            parts = [(to_bytes(cts[lo:hi], w), bins[lo:hi]) for lo, hi in _chunks(n, worker_count())]
            blobs = map_chunks(_bin_sums_task, (int(m), w, n_bins), parts, tasks_per_worker=1)
            out = [[ONE] * n_bins for _ in range(f)]
            for blob in blobs:
                flat = from_bytes(blob, w)
                for j in range(f):
                    row = out[j]
                    for b in range(n_bins):
                        row[b] = row[b] * flat[j * n_bins + b] % m
        else:
            out = bin_sums_kernel(m, cts, bins, n_bins)
        return out[0] if one_d else out

    def _bin_sums_native(self, cts: Sequence[Any], bins: np.ndarray, n_bins: int) -> list:
        """:meth:`bin_sums` on the compiled kernel: rows split over this process's threads, one
        grouped product per split (group = feature * n_bins + bin), partial sums multiplied."""
        n, f = bins.shape
        w = self.ciphertext_bytes
        m = int(self.ciphertext_modulus)
        groups = f * n_bins
        offs = (np.arange(f, dtype=np.int64) * n_bins)[None, :]
        spans = _chunks(n, worker_count()) if n * f >= PARALLEL_HISTOGRAM_AT and worker_count() > 1 else [(0, n)]
        parts = [(to_bytes(cts[lo:hi], w), np.tile(np.arange(hi - lo, dtype=np.int64), f),
                  (bins[lo:hi].astype(np.int64) + offs).T.ravel()) for lo, hi in spans]
        blobs = [_grouped_task(m, groups, parts)] if len(parts) == 1 else \
            map_chunks(_grouped_task, (m, groups), parts, threads=True, tasks_per_worker=1)
        return from_bytes(montgomery.multiply_vectors(m, blobs, groups), w)

    # -- wire -----------------------------------------------------------------------------------
    def ciphertexts_to_wire(self, cts: Sequence[Any]) -> BigInts:
        """Ciphertexts as fixed-width :class:`BigInts` for the codec."""
        w = self.ciphertext_bytes
        try:
            return BigInts.from_blob(to_bytes(cts, w), w, len(cts))
        except (OverflowError, TypeError, ValueError):
            raise CryptoError(f"a ciphertext does not fit {w} bytes (or is negative)") from None

    def encrypt_to_wire(self, plaintexts: Sequence[int] | np.ndarray) -> BigInts:
        """``ciphertexts_to_wire(encrypt(plaintexts))``; schemes may skip the ``mpz`` round trip."""
        return self.ciphertexts_to_wire(self.encrypt(plaintexts))

    def encrypt_to_wire_async(self, plaintexts: Sequence[int] | np.ndarray) -> Callable[[], BigInts]:
        """Start :meth:`encrypt_to_wire`; the returned function waits for and returns the result.
        Schemes with a pool override it (the default computes now)."""
        out = self.encrypt_to_wire(plaintexts)
        return lambda: out

    def ciphertext_block_from_wire(self, data: BigInts) -> bytes:
        """Validate received ciphertexts like :meth:`ciphertexts_from_wire`, but return them as one
        block of fixed-width big-endian bytes (the form the process-pool kernels take)."""
        if not isinstance(data, BigInts):
            raise CryptoError(f"expected ciphertexts as BigInts, got {type(data).__name__}")
        w = self.ciphertext_bytes
        if data.width != w:
            raise CryptoError(f"ciphertexts are {data.width} bytes wide; this {self.scheme} key uses {w}")
        blob = data.to_bytes()
        # fixed-width big-endian: byte order is numeric order, so 0 < c < N is two comparisons
        top, zero = int(self.ciphertext_modulus).to_bytes(w, "big"), bytes(w)
        for i in range(0, len(blob), w):
            c = blob[i:i + w]
            if c >= top or c == zero:
                raise CryptoError(f"ciphertext {i // w} is outside [1, N) for this {self.scheme} key")
        return blob

    def ciphertexts_from_wire(self, data: BigInts) -> Ciphertexts:
        """Validate and convert received :class:`BigInts` back to ciphertexts.

        Raises
        ------
        CryptoError
            If the width differs from :attr:`ciphertext_bytes` or a value is outside ``[1, N)``.
        """
        if not isinstance(data, BigInts):
            raise CryptoError(f"expected ciphertexts as BigInts, got {type(data).__name__}")
        if data.width != self.ciphertext_bytes:
            raise CryptoError(f"ciphertexts are {data.width} bytes wide; this {self.scheme} key uses {self.ciphertext_bytes}")
        m = self.ciphertext_modulus
        out = from_bytes(data.to_bytes(), data.width)
        for i, c in enumerate(out):
            if not 0 < c < m:
                raise CryptoError(f"ciphertext {i} is outside [1, N) for this {self.scheme} key")
        return out


class PrivateKey(abc.ABC):
    """Secret half: decryption (and, for the key owner, faster encryption)."""

    public_key: PublicKey

    @abc.abstractmethod
    def decrypt(self, cts: Sequence[Any], *, bound_bits: int | None = None) -> list[int]:
        """Decrypt to signed integers.

        Parameters
        ----------
        cts : sequence of mpz
        bound_bits : int, optional
            The caller's guarantee that every plaintext satisfies ``|m| < 2**bound_bits``;
            schemes may use it to decrypt faster (Paillier: modulo ``p`` only).
        """

    def encrypt(self, plaintexts: Sequence[int] | np.ndarray) -> Ciphertexts:
        """Encrypt with the public key (schemes override with a faster key-owner path)."""
        return self.public_key.encrypt(plaintexts)

    def _owner_encrypts(self) -> bool:
        return type(self).encrypt is not PrivateKey.encrypt

    def encrypt_to_wire(self, plaintexts: Sequence[int] | np.ndarray) -> BigInts:
        """Key-owner :meth:`PublicKey.encrypt_to_wire` (through the owner's faster path if any)."""
        if self._owner_encrypts():
            return self.public_key.ciphertexts_to_wire(self.encrypt(plaintexts))
        return self.public_key.encrypt_to_wire(plaintexts)

    def encrypt_to_wire_async(self, plaintexts: Sequence[int] | np.ndarray) -> Callable[[], BigInts]:
        """Key-owner :meth:`PublicKey.encrypt_to_wire_async` (through the owner's faster path if any)."""
        if self._owner_encrypts():
            out = self.encrypt_to_wire(plaintexts)
            return lambda: out
        return self.public_key.encrypt_to_wire_async(plaintexts)

    def encrypt_floats(self, values: np.ndarray | Sequence[float], precision: int = DEFAULT_PRECISION) -> Ciphertexts:
        """Key-owner :meth:`PublicKey.encrypt_floats`."""
        return self.encrypt(fixed_point.encode(values, precision))

    def decrypt_floats(self, cts: Sequence[Any], precision: int = DEFAULT_PRECISION, *,
                       bound_bits: int | None = None) -> np.ndarray:
        """Decrypt and decode fixed-point values to a float64 array."""
        return fixed_point.decode(self.decrypt(cts, bound_bits=bound_bits), precision)


# ---------------------------------------------------------------------------------------------
# Factory
# ---------------------------------------------------------------------------------------------
_SCHEMES = ("paillier", "ou")


def _scheme_module(scheme: str) -> Any:
    if scheme == "paillier":
        from fedrisk.crypto import paillier as mod
    elif scheme == "ou":
        from fedrisk.crypto import okamoto_uchiyama as mod
    else:
        raise CryptoError(f"unknown homomorphic scheme {scheme!r}; use one of {list(_SCHEMES)}")
    return mod


def generate_keypair(scheme: str = "paillier", bits: int = 2048, **options: Any) -> tuple[PublicKey, PrivateKey]:
    """Generate a key pair for ``scheme`` ("paillier" or "ou") with a ``bits``-bit modulus.

    Parameters
    ----------
    scheme : {"paillier", "ou"}
    bits : int
        Modulus size: 2048 (~112-bit security) or 3072 (~128-bit); smaller sizes are for tests.
    **options
        Scheme-specific (e.g. ``obfuscation_bits``).
    """
    return _scheme_module(scheme).generate_keypair(bits, **options)


def public_key_from_wire(data: dict, *, min_bits: int = 2048) -> PublicKey:
    """Rebuild a public key of any scheme from :meth:`PublicKey.to_wire` output.

    ``min_bits`` refuses keys with a smaller modulus (tests with small keys lower it).
    """
    if not isinstance(data, dict) or not isinstance(data.get("scheme"), str):
        raise CryptoError("a public key on the wire is a dict with a 'scheme' entry")
    try:
        return _scheme_module(data["scheme"]).public_key_class().from_wire(data, min_bits=min_bits)
    except CodecError as e:  # pragma: no cover - defensive
        raise CryptoError(str(e)) from None
