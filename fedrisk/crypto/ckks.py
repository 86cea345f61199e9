"""Packed CKKS (Microsoft SEAL through TenSEAL's ``sealapi``) for encrypted-matrix x plain-vector products.

One job only: a party encrypts its (fixed) feature matrix ``X`` once under its own secret key and
hands the ciphertexts to a peer; for any plaintext vector ``s`` the peer holds, the peer computes
an encryption of ``X^T s`` and sends it back; only the key owner can decrypt it. This is the
kernel of :mod:`fedrisk.algorithms.vertical.hetero_lr`. Nothing here is a new primitive: CKKS
(Cheon-Kim-Kim-Song 2017) as implemented by SEAL 4.x, with 128-bit security parameters
(``N = 8192``, coefficient modulus 60+40+60 bits, SEAL's ``tc128`` check on).

Packing ("row-packed", ``K`` slots per row)
-------------------------------------------
A ciphertext has ``S = N/2 = 4096`` slots. ``X`` (``n x k``) is cut into column groups of
``K = 16`` features (zero-padded) and row chunks of ``R = S / K = 256`` rows; chunk ``c`` of group
``g`` holds ``X[cR + r, gK + j]`` in slot ``r*K + j``. To compute ``X^T s`` over a set of chunks,
the peer multiplies each chunk by the plaintext ``s`` repeated ``K`` times per row (one
ct x pt product per chunk), adds the chunks, rescales, and rotate-and-adds by ``K, 2K, ...,
S/2`` (``log2 R = 8`` rotations, independent of the number of rows). Because SEAL's rotations
are cyclic, after the last step **every** slot ``p`` holds the complete sum for feature
``p mod K``: no slot carries a partial sum over a subset of rows.

Paired packing (``paired=True``, used by the exact vertical-LR solver): a chunk holds ``2R``
rows, row ``a`` in the real and row ``a + R`` in the imaginary part of the same slot. The peer
multiplies by ``s_a - i s_{a+R}``; the real part of the product is ``x_a s_a + x_{a+R} s_{a+R}``,
so half the ct x pt products and encodings give the same ``X^T s``. The imaginary part holds the
cross terms ``x_{a+R} s_a - x_a s_{a+R}`` -- functionals of ``s`` the owner must not see -- and is
removed before the result leaves: the peer adds the complex conjugate of the rotated sum (Galois
element ``2N - 1``, one key switch), leaving ``2 Re``. The owner's Galois keys include that
element.

Security notes
--------------
* The peer holds only ciphertexts under the owner's key, the owner's Galois keys for the eight
  rotation steps and the owner's public key, so it learns nothing about ``X`` under the RLWE
  assumption. The matrix is encrypted with the secret key and serialised *seeded*, which halves
  the bytes of every ciphertext of ``X``.
* **Re-randomisation.** A product ``Enc(X) * s`` followed by rotations is a deterministic function
  of the owner's own ciphertext (whose randomness ``a`` the owner knows) and of ``s``: its second
  component is linear in ``s`` and would let the owner solve for the peer's vector. So before a
  result leaves the peer it adds a *fresh public-key encryption* of the flooding noise; the sum's
  second component is then masked by the fresh encryption randomness (RLWE), and the owner's
  decryption reveals only ``X^T s`` plus noise. Giving the peer the public key costs nothing under
  IND-CPA (anyone may encrypt); it is what makes the re-randomisation possible.
* The owner decrypts ``X^T s + e`` where ``e`` is CKKS noise that depends on the peer's ``s``.
  Before sending, the peer adds *flooding* noise to every slot (complex Gaussian, ``flood``
  standard deviation per real component; vertical LR uses 2^-10, about 2^13 times the measured
  per-slot CKKS error of ~1e-7), so the small data-dependent CKKS error is hidden inside a much
  larger independent one (the countermeasure to Li-Micciancio style attacks on approximate
  decryption). The flood is complex because a real-only flood (what this module did before) leaves
  the imaginary half of every slot -- half of the decrypted error's degrees of freedom -- bare.
* **The flood cancels in the result.** For every feature the ``R`` replica slots carry flood values
  that sum to zero, so :meth:`CkksOwner.decrypt_sum` (which averages the replicas) returns
  ``X^T s`` plus only the intrinsic CKKS error: the same inputs give the same answer in every run
  to ~1e-9, which is what makes vertical LR reproducible (two runs with the same seed give the same
  model) and exact. The price, stated plainly: in the ``K`` replica-mean directions -- exactly the
  values the protocol reveals -- the decryptor sees the intrinsic CKKS error unflooded, smudged
  only by the fresh public-key encryption noise of the re-randomisation (same order of magnitude,
  independent of ``s``, unknown to the owner). Every other direction of the slot vector is flooded.
* The flood comes from :class:`GaussianStream`: a ChaCha20 keystream (``cryptography``) keyed with
  32 bytes from ``os.urandom`` per peer, mapped to Gaussians by Box-Muller -- a CSPRNG designed
  for the job, not numpy's PCG64 (whose state can be recovered from outputs).
* Shapes the owner declares are checked before anything is computed: the parameters must be the
  ones the job agreed on, every chunk a fresh 2-component ciphertext at the top level and the
  agreed scale, and the peer multiplies only the owner's declared columns (padding slots of the
  last column group are multiplied by zero), so a crafted matrix cannot widen what the owner
  decrypts beyond ``cols`` functionals of ``s`` per result.
* What the owner learns is exactly the vector ``X^T s`` (plus noise) for the ``s`` the peer
  chose to multiply by. What that reveals about ``s`` is the protocol's business (see
  ``hetero_lr``).

Serialisation goes through a private temporary directory because the SEAL binding saves to and
loads from paths only; files are deleted right after use.
"""
from __future__ import annotations

import os
import tempfile
import threading
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from fedrisk.errors import CryptoError

__all__ = ["CkksParams", "CkksOwner", "CkksPeer", "DEFAULT_PARAMS", "GaussianStream"]


@dataclass(frozen=True)
class CkksParams:
    """Public CKKS parameters; both sides rebuild the same SEAL context from them."""

    poly_modulus_degree: int = 8192
    coeff_bits: tuple[int, ...] = (60, 40, 60)
    scale_bits: int = 40
    slots_per_row: int = 16

    @property
    def slots(self) -> int:
        return self.poly_modulus_degree // 2

    @property
    def rows_per_ct(self) -> int:
        return self.slots // self.slots_per_row

    @property
    def steps(self) -> list[int]:
        out, st = [], self.slots_per_row
        while st < self.slots:
            out.append(st)
            st *= 2
        return out

    def to_wire(self) -> dict:
        return {"n": self.poly_modulus_degree, "coeff_bits": list(self.coeff_bits), "scale_bits": self.scale_bits,
                "slots_per_row": self.slots_per_row}

    @classmethod
    def from_wire(cls, d: dict) -> "CkksParams":
        try:
            p = cls(int(d["n"]), tuple(int(b) for b in d["coeff_bits"]), int(d["scale_bits"]), int(d["slots_per_row"]))
        except (KeyError, TypeError, ValueError) as e:
            raise CryptoError(f"malformed CKKS parameters {d!r:.200}: {e}") from None
        if p.poly_modulus_degree not in (8192, 16384) or p.slots_per_row not in (4, 8, 16, 32, 64):
            raise CryptoError(f"unsupported CKKS parameters {p}")
        return p


DEFAULT_PARAMS = CkksParams()


class GaussianStream:
    """Gaussian noise from a CSPRNG: a ChaCha20 keystream turned into normals by Box-Muller.

    Parameters
    ----------
    key : bytes, optional
        32-byte ChaCha20 key; default 32 fresh bytes from ``os.urandom``. Tests may pass a key to
        get a reproducible stream; protocols never do.

    Notes
    -----
    Flooding noise must be unpredictable to the party that decrypts, so it comes from a stream
    cipher keyed from the OS CSPRNG (the ``cryptography`` package's ChaCha20), not from a
    statistical generator such as numpy's PCG64, whose state follows from a few outputs. Each
    uniform uses 53 keystream bits; throughput is a few hundred MB/s of keystream, i.e. well
    under a millisecond per 4096-slot ciphertext.
    """

    def __init__(self, key: bytes | None = None) -> None:
        key = os.urandom(32) if key is None else bytes(key)
        if len(key) != 32:
            raise CryptoError("GaussianStream needs a 32-byte key")
        # 16-byte ChaCha20 nonce = 4-byte block counter + 12-byte nonce; a fresh key per stream
        # makes the all-zero nonce safe (2^32 blocks of 64 bytes = 256 GiB per stream)
        self._enc = Cipher(algorithms.ChaCha20(key, bytes(16)), mode=None).encryptor()
        self._lock = threading.Lock()

    def uniform(self, n: int) -> np.ndarray:
        """``n`` uniforms on the open interval (0, 1)."""
        with self._lock:
            raw = self._enc.update(bytes(8 * int(n)))
        words = np.frombuffer(raw, dtype=np.uint64)
        return ((words >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0 ** -53

    def normal(self, n: int, std: float = 1.0) -> np.ndarray:
        """``n`` independent N(0, std^2) samples."""
        m = (int(n) + 1) // 2
        u = self.uniform(2 * m)
        r = np.sqrt(-2.0 * np.log(u[:m]))
        th = (2.0 * np.pi) * u[m:]
        return np.concatenate([r * np.cos(th), r * np.sin(th)])[:n] * float(std)


def _sealapi():
    try:
        import tenseal.sealapi as s
    except ImportError as e:  # pragma: no cover - dependency missing
        raise CryptoError("vertical LR needs TenSEAL (pip install tenseal); it provides the CKKS scheme") from e
    return s


class _MemFile:
    """One anonymous in-memory file (closed when its thread's state goes away)."""

    def __init__(self) -> None:
        self.fd = os.memfd_create("fedrisk-ckks")  # close-on-exec by default

    def __del__(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass


class _Files:
    """Scratch space for SEAL's path-based (de)serialisation (TenSEAL's low-level API saves and loads
    by path only).

    On Linux each thread gets one anonymous in-memory file (``memfd_create``), reached by SEAL through
    ``/proc/self/fd/N``: it has no name in any folder, so nothing can outlive the process, not even
    when it is killed, and it costs no file creation or removal per call. Measured per 4096-slot
    ciphertext on the 2-core machine: dump 0.79 ms instead of 0.94 with a fresh ``mkstemp`` file in
    ``/dev/shm``, load 0.81 instead of 1.22 (vertical LR's label holder loads ~750 per job).
    Elsewhere each dump or load makes its own private file (``mkstemp``, mode 0600, in ``/dev/shm``
    where available) and removes it before returning. (A scratch *directory* per key holder, removed
    in ``close``, was left behind by every party process that was killed or never closed its keys:
    ~200 empty folders in ``/dev/shm`` after a test run.) The file is emptied after every call, so it
    keeps no serialised key or ciphertext in memory between calls.
    """

    def __init__(self) -> None:
        self.base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
        self._local = threading.local()
        self._memfd = hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd")

    def _fd(self) -> int | None:
        mem = getattr(self._local, "mem", None)
        if mem is None and self._memfd:
            try:
                mem = self._local.mem = _MemFile()
            except OSError:
                self._memfd = False
                return None
        return mem.fd if mem is not None else None

    def path(self) -> str:
        fd, p = tempfile.mkstemp(prefix="fedrisk-ckks-", suffix=".bin", dir=self.base)
        os.close(fd)
        return p

    def dump(self, obj) -> bytes:
        fd = self._fd()
        if fd is not None:
            try:
                obj.save(f"/proc/self/fd/{fd}")
                return os.pread(fd, os.fstat(fd).st_size, 0)
            finally:
                os.ftruncate(fd, 0)
        p = self.path()
        try:
            obj.save(p)
            with open(p, "rb") as fh:
                return fh.read()
        finally:
            _unlink(p)

    def load(self, obj, ctx, data: bytes):
        if not isinstance(data, (bytes, bytearray)):
            raise CryptoError(f"expected serialised SEAL object bytes, got {type(data).__name__}")
        fd = self._fd()
        p = None
        try:
            if fd is not None:
                if os.pwrite(fd, data, 0) != len(data):
                    raise CryptoError("could not stage a serialised SEAL object in memory")
                target = f"/proc/self/fd/{fd}"
            else:
                p = target = self.path()
                with open(p, "wb") as fh:
                    fh.write(data)
            try:
                obj.load(ctx, target)
            except Exception as e:  # noqa: BLE001 - SEAL raises assorted errors on bad input
                raise CryptoError(f"malformed SEAL object: {e}") from None
        finally:
            if fd is not None:
                os.ftruncate(fd, 0)
            if p is not None:
                _unlink(p)
        return obj

    def close(self) -> None:
        """Nothing to release: the in-memory file closes with its thread's state or the process,
        and a named file is removed by the call that made it."""


def _unlink(p: str) -> None:
    try:
        os.unlink(p)
    except OSError:
        pass


def _context(params: CkksParams):
    s = _sealapi()
    parms = s.EncryptionParameters(s.SCHEME_TYPE.CKKS)
    parms.set_poly_modulus_degree(params.poly_modulus_degree)
    parms.set_coeff_modulus(s.CoeffModulus.Create(params.poly_modulus_degree, list(params.coeff_bits)))
    return s.SEALContext(parms, True, s.SEC_LEVEL_TYPE.TC128)


def _galois_elt(step: int, n: int) -> int:
    # SEAL's CKKS rotation to the left by `step` slots is the automorphism X -> X^(3^step mod 2N)
    return pow(3, step, 2 * n)


class CkksOwner:
    """Key owner: encrypts its own matrix once, decrypts what peers computed on it.

    Parameters
    ----------
    params : CkksParams
        Public parameters (default :data:`DEFAULT_PARAMS`).
    """

    def __init__(self, params: CkksParams = DEFAULT_PARAMS) -> None:
        s = _sealapi()
        self.params = params
        self._files = _Files()
        self.ctx = _context(params)
        kg = s.KeyGenerator(self.ctx)
        self._sk = kg.secret_key()
        self._kg = kg
        self.encoder = s.CKKSEncoder(self.ctx)
        self.encryptor = s.Encryptor(self.ctx, self._sk)
        self.decryptor = s.Decryptor(self.ctx, self._sk)
        self.scale = float(2 ** params.scale_bits)

    def public_bundle(self) -> dict:
        """What a peer needs to compute on our ciphertexts and re-randomise the results:
        parameters, Galois keys and the public key."""
        s = _sealapi()
        N = self.params.poly_modulus_degree
        # the rotation steps plus complex conjugation (Galois element 2N - 1), used by paired packing
        gk = self._kg.create_galois_keys([_galois_elt(st, N) for st in self.params.steps] + [2 * N - 1])
        pk = s.PublicKey()
        self._kg.create_public_key(pk)
        return {"params": self.params.to_wire(), "galois": self._files.dump(gk), "public": self._files.dump(pk)}

    def encrypt_matrix(self, X: np.ndarray, paired: bool = False, with_values: bool = False):
        """Row-packed seeded ciphertexts of ``X``: ``out[g][c]`` = column group ``g``, row chunk ``c``.

        ``paired``: a chunk holds ``2R`` rows, row ``2R c + r`` in the real part of slot-row ``r`` and
        row ``2R c + R + r`` in its imaginary part (half the ciphertexts; see :meth:`CkksPeer.cross`).

        ``with_values``: return ``(out, X_enc)``, ``X_enc`` the ``n x k`` values the ciphertexts
        actually hold (decrypted right away). CKKS encryption adds a small error (~1e-10 here) to
        every entry and a peer's cross-product ``X^T s`` is computed on these values, not on ``X``.
        A protocol that adds such a product to its own local ``X^T s'`` (shares ``s + s'`` that
        carry large cancelling masks) must use ``X_enc`` for the local part too: with ``X`` the
        masks do not cancel, and the encryption error times the mask (~1e-8 in vertical LR's
        gradients, different in every run) stays in the sum.
        """
        s = _sealapi()
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or not np.all(np.isfinite(X)):
            raise CryptoError("encrypt_matrix needs a finite 2-D array")
        K, R = self.params.slots_per_row, self.params.rows_per_ct
        n, k = X.shape
        P = 2 if paired else 1
        groups = max(1, -(-k // K))
        chunks = -(-n // (P * R))
        padded = np.zeros((chunks * P * R, groups * K))
        padded[:n, :k] = X
        out: list[list[bytes]] = []
        held = np.zeros_like(padded) if with_values else None
        for g in range(groups):
            block = padded[:, g * K:(g + 1) * K]
            row = []
            for c in range(chunks):
                pt = s.Plaintext()
                if paired:
                    b = block[2 * c * R:(2 * c + 2) * R]
                    vals = (b[:R] + 1j * b[R:]).ravel().tolist()
                else:
                    vals = block[c * R:(c + 1) * R].ravel().tolist()
                self.encoder.encode(vals, self.scale, pt)
                row.append(self._files.dump(self.encryptor.encrypt_symmetric(pt)))
                if held is not None:  # the seeded ciphertext object cannot be decrypted: its bytes can
                    dec = s.Plaintext()
                    self.decryptor.decrypt(self._files.load(s.Ciphertext(), self.ctx, row[-1]), dec)
                    if paired:
                        v = np.asarray(self.encoder.decode_complex(dec)).reshape(R, K)
                        held[2 * c * R:(2 * c + 2) * R, g * K:(g + 1) * K] = np.r_[v.real, v.imag]
                    else:
                        held[c * R:(c + 1) * R, g * K:(g + 1) * K] = np.reshape(self.encoder.decode_double(dec), (R, K))
            out.append(row)
        if held is not None:
            return out, np.ascontiguousarray(held[:n, :k])
        return out

    def encrypt_vectors(self, V: np.ndarray) -> list[list[bytes]]:
        """Slot-packed seeded ciphertexts of the rows of ``V`` (``m x n``): ``out[j][c]`` holds
        ``V[j, c*S:(c+1)*S]``, one value per slot (``S`` = 4096 values per ciphertext).

        ``V`` may be complex: a CKKS slot holds a complex number, so two real vectors packed as
        ``a + i b`` cost one ciphertext (what the exact vertical-LR sigmoid uses)."""
        s = _sealapi()
        V = np.asarray(V)
        V = V.astype(np.complex128 if np.iscomplexobj(V) else np.float64)
        if V.ndim != 2 or not np.all(np.isfinite(V)):
            raise CryptoError("encrypt_vectors needs a finite 2-D array")
        S = self.params.slots
        out = []
        for row in V:
            cts = []
            for c in range(0, len(row), S):
                pt = s.Plaintext()
                self.encoder.encode(row[c:c + S].tolist(), self.scale, pt)
                cts.append(self._files.dump(self.encryptor.encrypt_symmetric(pt)))
            out.append(cts)
        return out

    def decrypt_vector(self, cts: Sequence[bytes], n: int) -> np.ndarray:
        """Decrypt a slot-packed result (:meth:`CkksPeer.inner_products`) into ``n`` real values."""
        s = _sealapi()
        S = self.params.slots
        if not isinstance(cts, list) or len(cts) != -(-n // S):
            raise CryptoError(f"expected {-(-n // S)} ciphertexts for {n} values")
        out = []
        for data in cts:
            ct = self._files.load(s.Ciphertext(), self.ctx, data)
            if ct.size() != 2:
                raise CryptoError("a result ciphertext must have exactly 2 components")
            pt = s.Plaintext()
            self.decryptor.decrypt(ct, pt)
            out.append(np.asarray(self.encoder.decode_double(pt), dtype=np.float64))
        return np.concatenate(out)[:n] if out else np.zeros(0)

    def decrypt_sum(self, data: bytes, k: int, group: int = 0, paired: bool = False) -> np.ndarray:
        """Decrypt a peer's ``X^T s`` result; return the ``k`` features of column group ``group``.

        Every slot holds a complete sum (see module notes); the ``R`` replicas of a feature carry
        independent flood noise and are averaged. ``paired`` results hold twice the sum (the peer
        adds the conjugate to keep only the real part).
        """
        s = _sealapi()
        ct = self._files.load(s.Ciphertext(), self.ctx, data)
        if ct.size() != 2:
            raise CryptoError("a cross-product ciphertext must have exactly 2 components")
        pt = s.Plaintext()
        self.decryptor.decrypt(ct, pt)
        vals = np.asarray(self.encoder.decode_double(pt), dtype=np.float64)
        K = self.params.slots_per_row
        kk = min(K, k - group * K)
        return vals.reshape(-1, K)[:, :kk].mean(axis=0) / (2.0 if paired else 1.0)

    def close(self) -> None:
        self._files.close()


class CkksPeer:
    """Evaluator side for one owner: holds the owner's encrypted matrix, computes ``X^T s``.

    Parameters
    ----------
    bundle : dict
        The owner's :meth:`CkksOwner.public_bundle`.
    flood : float
        Standard deviation of the Gaussian flooding noise added to every slot of a result.
    precise : bool
        Rotate before rescaling (error ~7e-9 instead of ~1.5e-7 per result; rotations cost 2x).
    paired : bool
        The owner's matrix is paired-packed (:meth:`CkksOwner.encrypt_matrix`): half the ct x pt
        products and encodings per result, plus one conjugation.
    """

    def __init__(self, bundle: dict, flood: float = 2.0 ** -14, precise: bool = True, paired: bool = False) -> None:
        s = _sealapi()
        if not isinstance(bundle, dict) or any(k not in bundle for k in ("params", "galois", "public")):
            raise CryptoError("CKKS key bundle must hold 'params', 'galois' and 'public'")
        self.params = CkksParams.from_wire(bundle["params"])
        self._files = _Files()
        self.ctx = _context(self.params)
        self.galois = self._files.load(s.GaloisKeys(), self.ctx, bundle["galois"])
        self.encryptor = s.Encryptor(self.ctx, self._files.load(s.PublicKey(), self.ctx, bundle["public"]))
        self.encoder = s.CKKSEncoder(self.ctx)
        self.evaluator = s.Evaluator(self.ctx)
        self.flood = float(flood)
        self.precise = bool(precise)
        self.paired = bool(paired)
        self.matrix: list[list] = []
        self.n_rows = 0
        self.cols = 0
        self._noise = GaussianStream()

    def load_matrix(self, groups: Sequence[Sequence[bytes]], n_rows: int, cols: int) -> None:
        """Load the owner's encrypted matrix (``encrypt_matrix`` output) for ``n_rows`` rows and
        ``cols`` columns (both agreed beforehand: the column count fixes how many functionals of
        our vectors the owner may decrypt, so a matrix with more column groups is refused)."""
        s = _sealapi()
        R, K = self.params.rows_per_ct, self.params.slots_per_row
        want = -(-n_rows // (R * (2 if self.paired else 1)))
        if not isinstance(cols, int) or cols < 1:
            raise CryptoError(f"encrypted matrix column count must be a positive integer, got {cols!r:.40}")
        if len(groups) != -(-cols // K):
            raise CryptoError(f"encrypted matrix has {len(groups)} column groups, expected {-(-cols // K)} for {cols} columns")
        top = list(self.ctx.first_parms_id())
        scale = float(2 ** self.params.scale_bits)
        mats = []
        for g in groups:
            if len(g) != want:
                raise CryptoError(f"encrypted matrix has {len(g)} row chunks, expected {want} for {n_rows} rows")
            cts = []
            for b in g:
                ct = self._files.load(s.Ciphertext(), self.ctx, b)
                if ct.size() != 2:
                    raise CryptoError("an encrypted matrix chunk must have exactly 2 components")
                if list(ct.parms_id()) != top or ct.scale != scale:
                    raise CryptoError("an encrypted matrix chunk is not a fresh ciphertext at the agreed level and scale")
                cts.append(ct)
            mats.append(cts)
        self.matrix = mats
        self.n_rows = n_rows
        self.cols = cols

    def cross(self, chunks: Iterable[int], s_rows: np.ndarray) -> list[bytes] | None:
        """Encryptions of ``X[rows]^T s`` (one per column group) over the given row chunks.

        ``s_rows`` is a vector over **all** ``n_rows`` rows (rows outside ``chunks`` are ignored).
        Returns ``None`` when ``s`` is zero on every chunk (SEAL refuses to produce the
        "transparent" ciphertext of a product with zero; the answer is the zero vector anyway).

        Paired packing: slot ``(r, j)`` of chunk ``c`` holds ``x_a + i x_b`` (rows ``a = 2Rc + r``,
        ``b = a + R``); it is multiplied by ``s_a - i s_b``, whose real part ``x_a s_a + x_b s_b``
        is the wanted sum over both rows. The imaginary part (``x_b s_a - x_a s_b``, a functional
        of ``s`` the owner must not see) is removed before anything leaves: the peer adds the
        complex conjugate of the rotated sum (one key switch), leaving ``2 Re``.
        """
        acc = self.cross_start()
        if not self.cross_add(acc, chunks, s_rows):
            return None
        return self.cross_finish(acc)

    def cross_start(self) -> list:
        """An empty running sum for :meth:`cross_add` / :meth:`cross_finish` (one slot per column group).

        The split lets a party add the products of each row chunk as soon as its share of those
        rows is known (pipelined with other work) and pay only for the rotations, flood and
        re-randomisation at the end; the result is the same as :meth:`cross` over all the chunks.
        """
        return [None] * len(self.matrix)

    def cross_add(self, acc: list, chunks: Iterable[int], s_rows: np.ndarray) -> bool:
        """Add ``X[rows]^T s`` over the given row chunks into ``acc`` (still unrotated); ``s_rows``
        is a vector over all ``n_rows`` rows (rows outside ``chunks`` are ignored). Returns whether
        ``s`` is nonzero on any of the chunks (chunks where it is zero are skipped: SEAL refuses such
        products)."""
        s = _sealapi()
        K, R = self.params.slots_per_row, self.params.rows_per_ct
        P = 2 if self.paired else 1
        v = np.zeros(len(self.matrix[0]) * R * P)
        v[:self.n_rows] = np.asarray(s_rows, dtype=np.float64)
        chunks = [c for c in chunks if np.any(v[c * P * R:(c + 1) * P * R])]
        if not chunks:
            return False
        scale = float(2 ** self.params.scale_bits)
        for g, cts in enumerate(self.matrix):
            kk = min(K, self.cols - g * K)
            colmask = (np.arange(K) < kk).astype(np.float64)  # padding columns multiply by zero
            for c in chunks:
                pt = s.Plaintext()
                vc = v[2 * c * R:(2 * c + 1) * R] - 1j * v[(2 * c + 1) * R:(2 * c + 2) * R] if self.paired \
                    else v[c * R:(c + 1) * R]
                self.encoder.encode(np.outer(vc, colmask).ravel().tolist(), cts[c].parms_id(), scale, pt)
                if pt.is_zero():  # values below the encoding precision: SEAL refuses the product
                    continue
                prod = s.Ciphertext()
                self.evaluator.multiply_plain(cts[c], pt, prod)
                if acc[g] is None:
                    acc[g] = prod
                else:
                    self.evaluator.add_inplace(acc[g], prod)
        return True

    def cross_finish(self, acc: list) -> list[bytes]:
        """Rotate-and-sum, flood and re-randomise a :meth:`cross_add` running sum into the result
        ciphertexts (one per column group; see :meth:`cross`)."""
        s = _sealapi()
        K, R = self.params.slots_per_row, self.params.rows_per_ct
        scale = float(2 ** self.params.scale_bits)
        out = []
        for g in range(len(self.matrix)):
            acc_g = acc[g]
            noise = s.Plaintext()
            fresh = s.Ciphertext()
            if acc_g is None:  # nothing to add up: the result is the flood alone, freshly encrypted
                self.encoder.encode(self._flood_values(R, K), scale, noise)
                self.encryptor.encrypt(noise, fresh)
                out.append(self._files.dump(fresh))
                continue
            # precise: rotate before rescaling, so key-switching noise is divided by the dropped
            # prime (~2^40): absolute error ~7e-9 instead of ~1.5e-7, for twice the rotation cost
            if not self.precise:
                self.evaluator.rescale_to_next_inplace(acc_g)
            for st in self.params.steps:
                rot = s.Ciphertext()
                self.evaluator.rotate_vector(acc_g, st, self.galois, rot)
                self.evaluator.add_inplace(acc_g, rot)
            if self.paired:  # acc + conj(acc) = 2 Re(acc): the imaginary cross terms never leave
                conj = s.Ciphertext()
                self.evaluator.complex_conjugate(acc_g, self.galois, conj)
                self.evaluator.add_inplace(acc_g, conj)
            # a fresh public-key encryption of the flood re-randomises both components (module
            # notes); added before the rescale (when precise) so that its encryption noise is divided too
            self.encoder.encode(self._flood_values(R, K), acc_g.parms_id(), acc_g.scale, noise)
            self.encryptor.encrypt(noise, fresh)
            fresh.scale = acc_g.scale
            self.evaluator.add_inplace(acc_g, fresh)
            if self.precise:
                self.evaluator.rescale_to_next_inplace(acc_g)
            out.append(self._files.dump(acc_g))
        acc[:] = [None] * len(acc)
        return out

    def add_results(self, parts: Sequence[Sequence[bytes] | None]) -> list[bytes] | None:
        """Sum several parties' :meth:`cross` results for the owner, column group by column group.

        Lets a third party relay the owner **one** sum ``X^T (s_P + s_Q + ...)`` instead of each
        ``X^T s_P`` on its own: with two or more feature holders the owner would otherwise decrypt
        functionals of every single peer's share (see :mod:`fedrisk.algorithms.vertical.hetero_lr_multi`).
        The relay holds no secret key, so it learns nothing; every part was already flooded and
        re-randomised by its producer, and zero-sum floods still sum to zero over the replicas.
        ``None`` parts (a zero share) are skipped; returns ``None`` when all parts are ``None``.
        """
        s = _sealapi()
        groups = len(self.matrix)
        acc: list | None = None
        for part in parts:
            if part is None:
                continue
            if not isinstance(part, (list, tuple)) or len(part) != groups or not all(isinstance(b, bytes) for b in part):
                raise CryptoError(f"a cross-product result must hold {groups} ciphertexts (one per column group)")
            cts = [self._files.load(s.Ciphertext(), self.ctx, b) for b in part]
            if any(ct.size() != 2 for ct in cts):
                raise CryptoError("a cross-product result ciphertext must have exactly 2 components")
            if acc is None:
                acc = cts
                continue
            for a, ct in zip(acc, cts):
                if list(a.parms_id()) != list(ct.parms_id()) or a.scale != ct.scale:
                    raise CryptoError("cross-product results to add are not at the same level and scale")
                self.evaluator.add_inplace(a, ct)
        return None if acc is None else [self._files.dump(a) for a in acc]

    def close(self) -> None:
        self._files.close()

    def _flood_values(self, R: int, K: int) -> list[complex]:
        """Complex Gaussian flood for one result, zero-sum over the ``R`` replicas of each feature."""
        z = self._noise.normal(2 * R * K, self.flood).reshape(2, R, K)
        z -= z.mean(axis=1, keepdims=True)
        return (z[0] + 1j * z[1]).ravel().tolist()

    def mask_encryptions(self, offsets: Sequence[np.ndarray], mask_std: float) -> list[tuple]:
        """Fresh public-key encryptions of ``offset + mask`` for :meth:`inner_products` (``pre=``),
        one per ``S``-slot chunk, made ahead of time (e.g. while waiting for the owner's vectors):
        the same masks and re-randomisation as :meth:`inner_products` draws itself, at the level and
        scale of a ct x pt product."""
        s = _sealapi()
        S = self.params.slots
        scale = float(2 ** self.params.scale_bits)
        out = []
        for off in offsets:
            off = np.asarray(off, dtype=np.float64)
            if len(off) > S or not np.all(np.isfinite(off)):
                raise CryptoError("mask_encryptions needs at most one ciphertext of finite offsets per chunk")
            z = self._noise.normal(2 * S, mask_std).reshape(2, S)
            z[0, :len(off)] += off
            noise = s.Plaintext()
            fresh = s.Ciphertext()
            self.encoder.encode((z[0] + 1j * z[1]).tolist(), self.ctx.first_parms_id(), scale * scale, noise)
            self.encryptor.encrypt(noise, fresh)
            out.append((fresh, z))
        return out

    def inner_products(self, cts: Sequence[Sequence[bytes]], coef: np.ndarray, offset: np.ndarray,
                       mask_std: float, pre: Sequence[tuple] | None = None) -> tuple[list[bytes], np.ndarray]:
        """Row-wise inner products of the owner's encrypted vectors with our plaintext ones, masked.

        ``cts`` is the owner's :meth:`CkksOwner.encrypt_vectors` of ``V`` (``m x n``); ``coef`` is our
        ``m x n`` plaintext (real or complex). Returns the encryption of
        ``sum_j coef[j] * V[j] + offset + mask`` per row (slot-packed) and the real part of ``mask``:
        the owner decrypts one additive share (the real part, :meth:`CkksOwner.decrypt_vector`), we
        keep ``-mask`` as the other. With complex ``V = a + i b`` and ``coef = c - i d`` the real
        part is ``c a + d b``: two real inner-product terms per slot; the imaginary part
        ``c b - d a`` is hidden under the imaginary half of the mask.

        Notes
        -----
        The mask is complex Gaussian (``mask_std`` per real component, from :class:`GaussianStream`)
        and is added as a *fresh public-key encryption*: it re-randomises the result (see module
        notes) and, being far larger than the CKKS error, also floods it; since we keep the mask
        as our share, it cancels exactly in the sum of the shares. Statistical hiding: a value
        ``v`` in [0, 1] under a mask of std ``sigma`` leaks at most ``1 / (2 sigma^2)`` nats.
        """
        s = _sealapi()
        coef = np.asarray(coef)
        coef = coef.astype(np.complex128 if np.iscomplexobj(coef) else np.float64)
        offset = np.asarray(offset, dtype=np.float64)
        m, n = coef.shape
        S = self.params.slots
        C = -(-n // S)
        if len(cts) != m or any(not isinstance(r, list) or len(r) != C for r in cts):
            raise CryptoError(f"expected {m} encrypted vectors of {C} ciphertexts each")
        if not (np.all(np.isfinite(coef)) and np.all(np.isfinite(offset))):
            raise CryptoError("inner_products needs finite plaintexts")
        scale = float(2 ** self.params.scale_bits)
        top = list(self.ctx.first_parms_id())
        out, kept = [], []
        for c in range(C):
            lo, hi = c * S, min((c + 1) * S, n)
            acc = None
            for j in range(m):
                ct = self._files.load(s.Ciphertext(), self.ctx, cts[j][c])
                if ct.size() != 2 or list(ct.parms_id()) != top or ct.scale != scale:
                    raise CryptoError("an encrypted vector is not a fresh ciphertext at the agreed level and scale")
                if not np.any(coef[j, lo:hi]):
                    continue  # SEAL refuses the "transparent" product with zero; it adds nothing
                pt = s.Plaintext()
                self.encoder.encode(coef[j, lo:hi].tolist(), ct.parms_id(), scale, pt)
                if pt.is_zero():  # coefficients below the encoding precision round to zero
                    continue
                prod = s.Ciphertext()
                self.evaluator.multiply_plain(ct, pt, prod)
                if acc is None:
                    acc = prod
                else:
                    self.evaluator.add_inplace(acc, prod)
            noise = s.Plaintext()
            fresh = s.Ciphertext()
            if pre is not None and acc is not None and acc.scale == scale * scale:
                fresh, z = pre[c]  # made ahead by mask_encryptions for these offsets
                fresh.scale = acc.scale
                self.evaluator.add_inplace(acc, fresh)
                self.evaluator.rescale_to_next_inplace(acc)
                out.append(self._files.dump(acc))
                kept.append(z[0, :hi - lo] - offset[lo:hi])
                continue
            z = self._noise.normal(2 * S, mask_std).reshape(2, S)
            z[0, :hi - lo] += offset[lo:hi]
            if acc is None:
                self.encoder.encode((z[0] + 1j * z[1]).tolist(), scale, noise)
                self.encryptor.encrypt(noise, fresh)
                acc = fresh
            else:  # mask + re-randomisation before the rescale, which then divides their noise
                self.encoder.encode((z[0] + 1j * z[1]).tolist(), acc.parms_id(), acc.scale, noise)
                self.encryptor.encrypt(noise, fresh)
                fresh.scale = acc.scale
                self.evaluator.add_inplace(acc, fresh)
                self.evaluator.rescale_to_next_inplace(acc)
            out.append(self._files.dump(acc))
            kept.append(z[0, :hi - lo] - offset[lo:hi])
        return out, np.concatenate(kept) if kept else np.zeros(0)
