"""CKKS cross-products: correct, and every result re-randomised before it leaves the peer."""
import numpy as np
import pytest
import tenseal.sealapi as seal

from fedrisk.crypto.ckks import CkksOwner, CkksPeer
from fedrisk.errors import CryptoError


@pytest.fixture(scope="module")
def pair():
    owner = CkksOwner()
    X = np.random.default_rng(0).normal(size=(700, 5))
    peer = CkksPeer(owner.public_bundle(), flood=2.0 ** -10)
    peer.load_matrix(owner.encrypt_matrix(X), 700, 5)
    yield owner, peer, X
    owner.close()
    peer.close()


def test_cross_product_decrypts_to_x_transpose_s(pair):
    owner, peer, X = pair
    s = np.random.default_rng(1).normal(size=700)
    out = peer.cross(range(3), s)
    np.testing.assert_allclose(owner.decrypt_sum(out[0], 5), X.T @ s, atol=5e-3)


def _second_component(peer, data: bytes, count: int = 64) -> list[int]:
    ct = peer._files.load(seal.Ciphertext(), peer.ctx, data)
    n = ct.poly_modulus_degree() * ct.coeff_modulus_size()
    arr = ct.dyn_array()
    return [arr[i] for i in range(n, n + count)]


def test_results_are_rerandomised_so_the_owner_cannot_solve_for_s(pair):
    # without a fresh encryption the second component is a deterministic, linear function of s
    # and of the owner's own ciphertext; with it, two results for the same s share nothing
    _, peer, _ = pair
    s = np.arange(700.0) / 700
    a = _second_component(peer, peer.cross(range(3), s)[0])
    b = _second_component(peer, peer.cross(range(3), s)[0])
    assert sum(x == y for x, y in zip(a, b)) == 0


def test_peer_needs_the_public_key_to_rerandomise():
    owner = CkksOwner()
    bundle = owner.public_bundle()
    del bundle["public"]
    with pytest.raises(CryptoError, match="public"):
        CkksPeer(bundle)
    owner.close()


def test_flood_cancels_in_the_averaged_result_but_not_per_slot(pair):
    """Same s twice: per-slot values differ by the (large) flood, the replica averages agree to ~1e-8."""
    owner, peer, X = pair
    s = np.random.default_rng(2).normal(size=700)
    raw = []
    for _ in range(2):
        ct = owner._files.load(seal.Ciphertext(), owner.ctx, peer.cross(range(3), s)[0])
        pt = seal.Plaintext()
        owner.decryptor.decrypt(ct, pt)
        raw.append(np.asarray(owner.encoder.decode_complex(pt)))
    assert np.abs(raw[0] - raw[1]).mean() > 1e-4                      # flooded, real and imaginary parts
    assert np.abs(raw[0].imag).mean() > 1e-4
    a, b = (r.real.reshape(-1, 16)[:, :5].mean(axis=0) for r in raw)
    np.testing.assert_allclose(a, b, atol=1e-8)
    np.testing.assert_allclose(a, X.T @ s, atol=1e-6)


def test_gaussian_stream_is_a_chacha20_csprng():
    from fedrisk.crypto.ckks import GaussianStream

    z = GaussianStream().normal(200_000)
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1.0) < 0.01
    assert abs(np.mean(np.abs(z) > 1.96) - 0.05) < 0.003
    # keyed: the same key gives the same stream, a fresh one a different stream
    key = bytes(range(32))
    np.testing.assert_array_equal(GaussianStream(key).normal(10), GaussianStream(key).normal(10))
    assert not np.allclose(GaussianStream().normal(10), GaussianStream().normal(10))
    with pytest.raises(CryptoError):
        GaussianStream(b"short")


def test_inner_products_give_additive_shares():
    owner = CkksOwner()
    peer = CkksPeer(owner.public_bundle())
    rng = np.random.default_rng(5)
    n, m = 5000, 4
    V = rng.uniform(-1, 1, (m, n))
    A = rng.normal(size=(m, n))
    off = rng.normal(size=n)
    out, mask = peer.inner_products(owner.encrypt_vectors(V), A, off, 2.0 ** 10)
    got = owner.decrypt_vector(out, n)
    assert np.abs(got - off).min() < 1e3 and np.abs(mask).std() > 500       # the decryptor's share is masked
    np.testing.assert_allclose(got - mask, (A * V).sum(axis=0) + off, atol=1e-6)
    owner.close()
    peer.close()


def test_matrix_with_undeclared_column_groups_is_refused(pair):
    owner, _, X = pair
    peer = CkksPeer(owner.public_bundle())
    with pytest.raises(CryptoError, match="column groups"):
        peer.load_matrix(owner.encrypt_matrix(np.zeros((700, 40))), 700, 5)
    peer.close()


def test_complex_pairs_give_two_terms_per_slot():
    """Two real vectors per ciphertext (``a + i b``) times ``c - i d``: the decrypted real part is
    ``c a + d b``; the imaginary garbage ``c b - d a`` never reaches the decryptor's share."""
    owner = CkksOwner()
    peer = CkksPeer(owner.public_bundle())
    rng = np.random.default_rng(6)
    n = 5000
    a, b = rng.uniform(-1, 1, (2, 3, n))
    c, d = rng.normal(size=(2, 3, n))
    off = rng.normal(size=n)
    out, mask = peer.inner_products(owner.encrypt_vectors(a + 1j * b), c - 1j * d, off, 2.0 ** 10)
    got = owner.decrypt_vector(out, n)
    np.testing.assert_allclose(got - mask, (c * a + d * b).sum(axis=0) + off, atol=1e-6)
    owner.close()
    peer.close()


def test_paired_rows_cross_product_is_exact_and_real():
    """Paired packing (two rows per slot, real and imaginary part): ``X^T s`` as with one row per
    slot, padding columns still multiplied by zero, and the imaginary cross terms
    ``x_b s_a - x_a s_b`` removed by the conjugation before the result leaves the peer."""
    rng = np.random.default_rng(8)
    n = 1500
    X = rng.normal(size=(n, 5))
    s = rng.normal(size=n)
    owner = CkksOwner()
    peer = CkksPeer(owner.public_bundle(), flood=2.0 ** -10, paired=True)
    peer.load_matrix(owner.encrypt_matrix(X, paired=True), n, 3)  # declared: 3 columns of the 5
    res = peer.cross(range(-(-n // 512)), s)
    np.testing.assert_allclose(owner.decrypt_sum(res[0], 3, paired=True), X[:, :3].T @ s, atol=1e-6)
    # look at the raw slots: the replica means of the imaginary parts and of the padding are zero
    from fedrisk.crypto.ckks import _sealapi

    sa = _sealapi()
    ct = owner._files.load(sa.Ciphertext(), owner.ctx, res[0])
    pt = sa.Plaintext()
    owner.decryptor.decrypt(ct, pt)
    vals = np.asarray(owner.encoder.decode_complex(pt)).reshape(-1, 16).mean(axis=0)
    np.testing.assert_allclose(vals.imag, 0.0, atol=1e-6)
    np.testing.assert_allclose(vals.real[3:], 0.0, atol=1e-6)
    # a matrix packed one row per slot is refused by a paired peer (its chunk count differs)
    with pytest.raises(CryptoError, match="row chunks"):
        peer.load_matrix(owner.encrypt_matrix(X), n, 5)
    owner.close()
    peer.close()


@pytest.mark.parametrize("paired", [False, True])
def test_a_cross_product_is_computed_on_the_values_the_ciphertexts_hold(paired):
    """``encrypt_matrix(with_values=True)`` returns the matrix the ciphertexts hold (``X`` plus the
    ~1e-10 encryption error), and a peer's ``X^T s`` is that matrix's product: with a large
    ``s`` (here a 2^10-scale mask, as on vertical LR's sigmoid shares) the result is far closer to
    ``X_enc^T s`` than to ``X^T s``. A party that adds such a product to its own local part must
    therefore use ``X_enc`` there, or the masks leave the encryption error times the mask behind."""
    rng = np.random.default_rng(11)
    n = 1100
    X = rng.normal(size=(n, 4))
    owner = CkksOwner()
    peer = CkksPeer(owner.public_bundle(), flood=2.0 ** -10, paired=paired)
    enc, X_enc = owner.encrypt_matrix(X, paired=paired, with_values=True)
    assert X_enc.shape == X.shape and X_enc.dtype == np.float64
    assert 0 < np.abs(X_enc - X).max() < 1e-8  # the encryption error: there, and small
    peer.load_matrix(enc, n, 4)
    s = rng.normal(size=n) * 2.0 ** 10 * 0.5  # as hetero_lr scales its masked shares (~2^14 sums)
    res = peer.cross(range(-(-n // (512 if paired else 256))), s)
    got = owner.decrypt_sum(res[0], 4, paired=paired)
    err_enc = np.abs(got - X_enc.T @ s).max()
    err_plain = np.abs(got - X.T @ s).max()
    assert err_enc < err_plain / 20, (err_enc, err_plain)
    owner.close()
    peer.close()


def test_a_killed_key_holder_leaves_no_scratch_file_or_folder():
    """SEAL (de)serialises through files here; a party killed mid-job (or one that never closes its keys)
    must not leave them behind in /dev/shm (or the temporary folder): they were one folder per key holder."""
    import os
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    base = Path("/dev/shm") if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else Path(tempfile.gettempdir())
    script = (
        "import os\n"
        "import numpy as np\n"
        "import tenseal.sealapi as s\n"
        "from fedrisk.crypto.ckks import CkksOwner, CkksPeer\n"
        "o = CkksOwner()\n"
        "p = CkksPeer(o.public_bundle())\n"
        "enc = o.encrypt_matrix(np.ones((8, 2)))\n"
        "p.load_matrix(enc, 8, 2)\n"
        "assert p.cross(range(len(enc[0])), np.ones(8)) is not None\n"
        "os._exit(0)  # as a killed party: no close(), no interpreter shutdown\n")
    before = {f.name for f in base.glob("fedrisk-ckks-*")}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert {f.name for f in base.glob("fedrisk-ckks-*")} - before == set()


def test_scratch_in_memory_gives_the_file_paths_bytes_per_thread_and_closes_with_its_thread():
    """SEAL reaches each thread's anonymous in-memory file through /proc/self/fd; the bytes are those
    the named-file fallback gives, threads do not mix their objects, and a finished thread's file
    is closed (no descriptor per thread left open)."""
    import os
    import threading

    import tenseal.sealapi as s

    from fedrisk.crypto.ckks import CkksOwner, _Files

    owner = CkksOwner()
    files, named = _Files(), _Files()
    named._memfd = False
    if not files._memfd:
        pytest.skip("no memfd_create here: only the named-file path runs")
    pk = s.PublicKey()
    owner._kg.create_public_key(pk)
    assert files.dump(pk) == named.dump(pk)  # same serialisation either way
    blobs = {}
    for v in (0.25, -3.5):
        pt = s.Plaintext()
        owner.encoder.encode([v] * 16, owner.scale, pt)
        blobs[v] = files.dump(owner.encryptor.encrypt_symmetric(pt))
    before = len(os.listdir("/proc/self/fd"))
    got, errors = {}, []

    def work(v):
        try:
            for _ in range(20):
                ct = files.load(s.Ciphertext(), owner.ctx, blobs[v])
                pt = s.Plaintext()
                owner.decryptor.decrypt(ct, pt)
                got.setdefault(v, []).append(owner.encoder.decode_double(pt)[0])
                assert files.dump(ct) == named.dump(ct)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(v,)) for v in (0.25, -3.5) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for v, vals in got.items():
        assert len(vals) == 60 and np.allclose(vals, v, atol=1e-6), v
    assert len(os.listdir("/proc/self/fd")) <= before  # the six threads' files are closed
    with pytest.raises(CryptoError, match="malformed SEAL object"):
        files.load(s.Ciphertext(), owner.ctx, b"not a ciphertext")
    with pytest.raises(CryptoError, match="malformed SEAL object"):
        named.load(s.Ciphertext(), owner.ctx, b"not a ciphertext")
