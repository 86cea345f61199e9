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
