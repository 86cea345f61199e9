"""Paillier / Okamoto-Uchiyama throughput against ``phe`` (python-paillier), same key size, same run.

``python benchmarks/run.py paillier --out FILE.json [--bits 2048] [--rows 30000] [--features 10]``

Ours goes through the public batch API (float vectors in, fixed-point encoding included, process
pool on every usable core); ``phe`` goes through its own float API one value at a time (it has no
batch API and is single-threaded), sampled on fewer items and extrapolated to a rate. ``phe``
floats are encoded at a fixed precision so that its additions are plain ciphertext products, as
ours are. One-time costs (pool start-up, fixed-base tables) are measured apart under ``setup_s``.

``speedup`` = our rate / ``phe`` rate:
* ``encrypt``, ``decrypt``, ``add``, ``histogram``: Paillier (public-key encryption, full CRT
  decryption) vs ``phe``;
* ``encrypt_owner``: Paillier encryption by the key owner (CRT);
* ``decrypt_bounded``: Paillier decryption when the caller declares ``|m| < 2^bound_bits`` with
  ``bound_bits <= |p| - 2`` (true for any fixed-point value a protocol bounds, e.g. packed
  gradients): modulo ``p`` only, half the work;
* ``encrypt_ou``, ``decrypt_ou``, ``histogram_ou``: Okamoto-Uchiyama at the same modulus size vs
  ``phe`` Paillier (OU has half-size ciphertexts: 256 vs 512 bytes at 2048 bits).
``per_core`` repeats the Paillier figures single-process, to separate algorithmic from parallel gain.
"""
from __future__ import annotations

import argparse
import os
import time
from typing import Any, Callable

import numpy as np


def _rate(fn: Callable[[], Any], count: int, repeat: int = 2) -> tuple[float, Any]:
    """Items per second, best of ``repeat`` runs (the machine is shared; both sides get the same rule)."""
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return count / best, out


def run(args: list[str]) -> dict:
    ap = argparse.ArgumentParser(prog="paillier")
    ap.add_argument("--bits", type=int, default=2048)
    ap.add_argument("--rows", type=int, default=30000, help="histogram rows")
    ap.add_argument("--features", type=int, default=10)
    ap.add_argument("--bins", type=int, default=32)
    ap.add_argument("--n-encrypt", type=int, default=8000)
    ap.add_argument("--n-decrypt", type=int, default=800)
    ap.add_argument("--n-phe", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(args)

    import phe

    from fedrisk.crypto import additive, paillier
    from fedrisk.crypto.additive import generate_keypair, worker_count

    rng = np.random.default_rng(a.seed)
    res: dict[str, Any] = {"case": "paillier", "key_bits": a.bits, "cores": worker_count(),
                           "load_avg_1m_at_start": round(os.getloadavg()[0], 2)}
    setup: dict[str, float] = {}
    ours: dict[str, float] = {}
    ref: dict[str, float] = {}

    t = time.perf_counter()
    pub, priv = generate_keypair("paillier", a.bits)
    setup["keygen_paillier"] = time.perf_counter() - t
    t = time.perf_counter()
    opub, opriv = generate_keypair("ou", a.bits)
    setup["keygen_ou"] = time.perf_counter() - t

    # Warm-up: start the pool and build each process's fixed-base tables once per key.
    warm = rng.normal(size=additive.PARALLEL_ENCRYPT_AT * worker_count())
    for name, fn in (("tables_paillier", pub.encrypt_floats), ("tables_paillier_owner", priv.encrypt_floats),
                     ("tables_ou", opub.encrypt_floats)):
        t = time.perf_counter()
        fn(warm)
        setup[name] = time.perf_counter() - t
    res["setup_s"] = {k: round(v, 3) for k, v in setup.items()}

    x = rng.normal(size=a.n_encrypt)
    ours["encrypt"], cts = _rate(lambda: pub.encrypt_floats(x), len(x))
    ours["encrypt_owner"], _ = _rate(lambda: priv.encrypt_floats(x), len(x))
    ours["encrypt_ou"], octs = _rate(lambda: opub.encrypt_floats(x), len(x))
    d = cts[: a.n_decrypt]
    ours["decrypt"], back = _rate(lambda: priv.decrypt_floats(d), len(d))
    assert np.allclose(back, x[: len(d)], atol=1e-9)
    bound = int(np.abs(x).max() * 2**32).bit_length() + 1  # what a protocol knows about its values
    ours["decrypt_bounded"], back = _rate(lambda: priv.decrypt_floats(d, bound_bits=bound), len(d))
    assert np.allclose(back, x[: len(d)], atol=1e-9)
    ours["decrypt_ou"], back = _rate(lambda: opriv.decrypt_floats(octs[: a.n_decrypt]), a.n_decrypt)
    assert np.allclose(back, x[: a.n_decrypt], atol=1e-9)
    ours["add"], _ = _rate(lambda: pub.add(cts, cts[::-1]), len(cts))

    # Histogram kernel: rows x features bin sums of one encrypted value per row.
    hx = rng.normal(size=a.rows)
    bins = rng.integers(0, a.bins, size=(a.rows, a.features))
    hcts = pub.encrypt_floats(hx)
    rate, hist = _rate(lambda: pub.bin_sums(hcts, bins, a.bins), 1)
    hist_s = 1 / rate
    got = priv.decrypt_floats(hist[0])
    want = np.bincount(bins[:, 0], weights=hx, minlength=a.bins)
    assert np.allclose(got, want, atol=1e-6)
    ohcts = opub.encrypt_floats(hx)
    hist_ou_s = 1 / _rate(lambda: opub.bin_sums(ohcts, bins, a.bins), 1)[0]
    cells = a.rows * a.features
    ours["histogram"] = cells / hist_s
    ours["histogram_ou"] = cells / hist_ou_s

    # Single-process figures for the same operations (algorithmic gain only).
    per_core: dict[str, float] = {}
    xs = x[:1000]
    res_ints = [int(v) % int(pub.n) for v in (np.rint(xs * 2**32).astype(np.int64).tolist())]
    per_core["encrypt"], _ = _rate(lambda: paillier._encrypt_kernel(pub.n, pub.hs, pub.obfuscation_bits, res_ints), len(xs))
    per_core["decrypt"], _ = _rate(
        lambda: paillier._decrypt_kernel(priv.p, priv.q, priv.hp, priv.hq, priv.q_inv_p, False, cts[:300]), 300)
    sub = 20000
    per_core["histogram"], _ = _rate(lambda: additive.bin_sums_kernel(pub.nsquare, hcts[:sub], bins[:sub, :1], a.bins), sub)

    # phe reference (single-threaded, one value at a time).
    ppub = phe.paillier.PaillierPublicKey(int(pub.n))
    ppriv = phe.paillier.PaillierPrivateKey(ppub, int(priv.p), int(priv.q))
    px = x[: a.n_phe].tolist()
    ref["encrypt"], pcts = _rate(lambda: [ppub.encrypt(v, precision=2**-32) for v in px], len(px))
    ref["decrypt"], pback = _rate(lambda: [ppriv.decrypt(c) for c in pcts], len(pcts))
    assert np.allclose(pback, px, atol=1e-9)
    pa, pb = pcts * 10, pcts[::-1] * 10
    ref["add"], _ = _rate(lambda: [u + v for u, v in zip(pa, pb)], len(pa))
    # phe histogram: the same per-(row, feature) ciphertext additions into bins, on a sample.
    n_cells = 20 * len(pcts)

    def phe_hist() -> None:
        acc: list[Any] = [None] * a.bins
        for i in range(n_cells):
            b = int(bins[i % a.rows, 0])
            c = pcts[i % len(pcts)]
            acc[b] = c if acc[b] is None else acc[b] + c

    ref["histogram"], _ = _rate(phe_hist, n_cells)

    # Cross-check: phe decrypts our ciphertexts (same key).
    assert [ppriv.raw_decrypt(int(c)) for c in cts[:3]] == [int(v) % int(pub.n) for v in
                                                             np.rint(x[:3] * 2**32).astype(np.int64).tolist()]

    res["ours_per_s"] = {k: round(v, 1) for k, v in ours.items()}
    res["ours_single_process_per_s"] = {k: round(v, 1) for k, v in per_core.items()}
    res["phe_per_s"] = {k: round(v, 1) for k, v in ref.items()}
    res["phe_sample_sizes"] = {"encrypt": len(px), "decrypt": len(pcts), "add": len(pa), "histogram": n_cells}
    res["histogram"] = {"rows": a.rows, "features": a.features, "bins": a.bins,
                        "paillier_s": round(hist_s, 3), "ou_s": round(hist_ou_s, 3),
                        "phe_extrapolated_s": round(cells / ref["histogram"], 1)}
    res["ciphertext_bytes"] = {"paillier": pub.ciphertext_bytes, "ou": opub.ciphertext_bytes}
    res["security_bits"] = {"paillier": pub.security_bits, "ou": opub.security_bits}
    res["speedup"] = {
        "encrypt": ours["encrypt"] / ref["encrypt"],
        "decrypt": ours["decrypt"] / ref["decrypt"],
        "decrypt_bounded": ours["decrypt_bounded"] / ref["decrypt"],
        "add": ours["add"] / ref["add"],
        "histogram": ours["histogram"] / ref["histogram"],
        "encrypt_owner": ours["encrypt_owner"] / ref["encrypt"],
        "encrypt_ou": ours["encrypt_ou"] / ref["encrypt"],
        "decrypt_ou": ours["decrypt_ou"] / ref["decrypt"],
        "histogram_ou": ours["histogram_ou"] / ref["histogram"],
    }
    res["speedup"] = {k: round(v, 2) for k, v in res["speedup"].items()}
    res["per_core_speedup"] = {k: round(per_core[k] / ref[k], 2) for k in per_core}
    additive.shutdown_pools()
    return res
