"""The compiled Montgomery kernels equal their gmpy2 fallbacks bit for bit, and refuse bad input."""
from __future__ import annotations

import os
import subprocess
import sys
import secrets
from contextlib import contextmanager

import gmpy2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedrisk.crypto import montgomery
from fedrisk.errors import CryptoError

SETTINGS = settings(max_examples=40, deadline=None)
native_only = pytest.mark.skipif(
    not montgomery.AVAILABLE,
    reason="the compiled kernel fedrisk.crypto._montgomery is not built (needs a C compiler and libgmp-dev)")


def test_kernel_is_built_where_required():
    # CI sets FEDRISK_REQUIRE_NATIVE=1 so that the compiled path is what the suite exercises
    if os.environ.get("FEDRISK_REQUIRE_NATIVE") == "1":
        assert montgomery.AVAILABLE, "fedrisk.crypto._montgomery did not build; install gcc and libgmp-dev"


@contextmanager
def gmpy2_fallback(on: bool = True):
    """Run the wrapped functions on their gmpy2 fallbacks inside the block."""
    saved = montgomery._native, montgomery.AVAILABLE
    if on:
        montgomery._native, montgomery.AVAILABLE = None, False
    try:
        yield
    finally:
        montgomery._native, montgomery.AVAILABLE = saved


bit_sizes = st.sampled_from([7, 63, 64, 65, 127, 200, 512, 683, 1366, 2048])


def _odd(bits: int, rnd: np.random.Generator) -> int:
    x = int.from_bytes(rnd.bytes((bits + 7) // 8), "big") >> (-bits % 8)
    return x | 1 | (1 << (bits - 1))


def _residues(rnd: np.random.Generator, n: int, count: int) -> list[int]:
    """``count`` near-uniform residues mod ``n`` (64 spare bits before the reduction)."""
    return [int.from_bytes(rnd.bytes(n.bit_length() // 8 + 8), "big") % n for _ in range(count)]


def _blob(values, n):
    return b"".join(int(v).to_bytes(montgomery.width_of(n), "big") for v in values)


def _values(blob, n):
    w = montgomery.width_of(n)
    return [int.from_bytes(blob[i:i + w], "big") for i in range(0, len(blob), w)]


def _both(fn):
    got = fn()
    with gmpy2_fallback():
        ref = fn()
    return got, ref


@native_only
@SETTINGS
@given(bits=bit_sizes, seed=st.integers(0, 2**32 - 1), n_vals=st.integers(1, 30), n_edges=st.integers(0, 80),
       n_groups=st.integers(1, 12))
def test_grouped_products_matches_gmpy2(bits, seed, n_vals, n_edges, n_groups):
    rnd = np.random.default_rng(seed)
    n = _odd(bits, rnd)
    vals = _residues(rnd, n, n_vals)
    which = rnd.integers(0, n_vals, n_edges)
    group = rnd.integers(0, n_groups, n_edges)
    got = montgomery.grouped_products(n, _blob(vals, n), which, group, n_groups)
    expect = [1] * n_groups
    for i, g in zip(which.tolist(), group.tolist()):
        expect[g] = expect[g] * vals[i] % n
    assert _values(got, n) == expect


@native_only
@SETTINGS
@given(bits=bit_sizes, seed=st.integers(0, 2**32 - 1), count=st.integers(0, 12), k=st.integers(1, 6),
       with_factors=st.booleans())
def test_gather_products_matches_gmpy2(bits, seed, count, k, with_factors):
    rnd = np.random.default_rng(seed)
    n = _odd(bits, rnd)
    base = _residues(rnd, n, 1)[0]
    idx = rnd.integers(-1, 17, (count, k))
    factors = _residues(rnd, n, count)
    fb = _blob(factors, n) if with_factors else None
    got, ref = _both(lambda: montgomery.gather_products(montgomery.power_table(n, base, 17), idx, fb))
    assert got == ref
    expect = [(factors[i] if with_factors else 1) * pow(base, int(sum(j for j in row if j >= 0)), n) % n
              for i, row in enumerate(idx.tolist())]
    assert _values(got, n) == expect


@native_only
@SETTINGS
@given(bits=bit_sizes, seed=st.integers(0, 2**32 - 1), count=st.integers(0, 20), group=st.integers(1, 7),
       shift=st.integers(0, 70))
def test_shift_products_matches_gmpy2(bits, seed, count, group, shift):
    rnd = np.random.default_rng(seed)
    n = _odd(bits, rnd)
    vals = _residues(rnd, n, count)
    got, ref = _both(lambda: montgomery.shift_products(n, _blob(vals, n), group, shift))
    assert got == ref
    expect = []
    for lo in range(0, count, group):
        acc = 1
        for j, c in enumerate(vals[lo:lo + group]):
            acc = acc * pow(c, 1 << (shift * j), n) % n
        expect.append(acc)
    assert _values(got, n) == expect


@native_only
@SETTINGS
@given(bits=bit_sizes, seed=st.integers(0, 2**32 - 1), count=st.integers(0, 8),
       exponent=st.one_of(st.integers(0, 70), st.integers(0, 2**700)))
def test_pow_list_matches_gmpy2(bits, seed, count, exponent):
    rnd = np.random.default_rng(seed)
    n = _odd(bits, rnd)
    vals = _residues(rnd, n, count)
    got, ref = _both(lambda: montgomery.pow_list(n, _blob(vals, n), exponent))
    assert got == ref
    assert _values(got, n) == [pow(v, exponent, n) for v in vals]


@native_only
@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), bits=st.sampled_from([128, 256, 341, 682]), count=st.integers(0, 10))
def test_crt_combine_matches_gmpy2(seed, bits, count):
    rnd = np.random.default_rng(seed)
    p = int(gmpy2.next_prime(_odd(bits, rnd)))
    q = int(gmpy2.next_prime(_odd(bits + 2, rnd)))
    m1, m2 = p * p, q
    a, b = _residues(rnd, m1, count), _residues(rnd, m2, count)
    width = montgomery.width_of(m1 * m2)
    got, ref = _both(lambda: montgomery.crt_combine(m1, m2, _blob(a, m1), _blob(b, m2), width))
    assert got == ref
    for c, x, y in zip(_values(got, m1 * m2), a, b):
        assert c % m1 == x and c % m2 == y and c < m1 * m2


@pytest.mark.parametrize("native", [True, False])
def test_bad_input_is_a_crypto_error(native):
    if native and not montgomery.AVAILABLE:
        pytest.skip("compiled kernel not built")
    with gmpy2_fallback(not native):
        _bad_inputs()


def _bad_inputs():
    n = 1009
    with pytest.raises(CryptoError):  # a value not below the modulus
        montgomery.grouped_products(n, (2000).to_bytes(2, "big"), np.array([0]), np.array([0]), 1)
    with pytest.raises(CryptoError):  # which points past the values
        montgomery.grouped_products(n, (5).to_bytes(2, "big"), np.array([1]), np.array([0]), 1)
    with pytest.raises(CryptoError):  # index past the table
        montgomery.gather_products(montgomery.power_table(n, 3, 4), np.array([[4]]))
    with pytest.raises(CryptoError):  # factor count
        montgomery.gather_products(montgomery.power_table(n, 3, 4), np.array([[1], [2]]), (5).to_bytes(2, "big"))
    with pytest.raises(CryptoError):  # not whole values
        montgomery.shift_products(n, b"\x01\x02\x03", 2, 3)


@pytest.mark.parametrize("native", [True, False])
def test_even_modulus_refused(native):
    if native and not montgomery.AVAILABLE:
        pytest.skip("compiled kernel not built")
    for call in (lambda: montgomery.power_table(1000, 3, 4),
                 lambda: montgomery.grouped_products(1000, (5).to_bytes(2, "big"), np.array([0]), np.array([0]), 1),
                 lambda: montgomery.shift_products(1, (0).to_bytes(1, "big"), 1, 1)):
        with gmpy2_fallback(not native), pytest.raises(CryptoError, match="odd"):
            call()


@native_only
def test_kernels_release_the_gil_and_agree_under_threads():
    from concurrent.futures import ThreadPoolExecutor

    n = int(gmpy2.next_prime(secrets.randbits(1024))) * int(gmpy2.next_prime(secrets.randbits(1024)))
    vals = [secrets.randbelow(n) for _ in range(400)]
    blob = _blob(vals, n)
    which = np.arange(400)
    group = np.arange(400) % 7
    with ThreadPoolExecutor(4) as ex:
        outs = list(ex.map(lambda _: montgomery.grouped_products(n, blob, which, group, 7), range(8)))
    assert len(set(outs)) == 1


# Size products: a count or width that wraps ``count * size`` allocates a small buffer the loop
# then writes far past (issue 12 item 8: power_table(count=2**61+1) at one limb made an 8-byte
# buffer and segfaulted). Each call runs in a child so a heap overflow cannot take pytest down.
_WRAPPING_CALLS = {
    "power_table": "k.power_table(n, b, 2**61 + 1)",
    "power_table_max": "k.power_table(n, b, sys.maxsize)",
    "grouped_products": "k.grouped_products(n, b, np.zeros(1, np.int64), np.zeros(1, np.int64), 2**61 + 1)",
    "crt_combine": "k.crt_combine(n, m2, one, b * 4, one * 4, 2**62 + 2)",
    "crt_combine_width0": "k.crt_combine(n, m2, one, b, one, 0)",
}


@native_only
@pytest.mark.parametrize("call", sorted(_WRAPPING_CALLS))
def test_size_products_that_overflow_are_refused_not_written_past(call):
    code = (
        "import sys, numpy as np\n"
        "from fedrisk.crypto import _montgomery as k\n"
        "n = (2**64 - 59).to_bytes(8, 'big'); m2 = (2**61 - 1).to_bytes(8, 'big')\n"
        "b = (3).to_bytes(8, 'big'); one = (1).to_bytes(8, 'big')\n"
        "try:\n"
        f"    {_WRAPPING_CALLS[call]}\n"
        "except (ValueError, MemoryError) as e:\n"
        "    print('refused:', e); sys.exit(0)\n"
        "sys.exit(3)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"{call}: exit {r.returncode} (negative = killed by a signal) {r.stderr[-500:]}"
    assert "refused:" in r.stdout


@contextmanager
def generic_product():
    """Run the compiled kernels on GMP's generic Montgomery product inside the block."""
    before = montgomery.ADX
    montgomery.set_adx(False)
    try:
        yield
    finally:
        montgomery.set_adx(before)


@native_only
@SETTINGS
@given(limbs=st.integers(1, 33), top=st.sampled_from(["random", "ones", "low"]), seed=st.integers(0, 2**32 - 1),
       exponent=st.integers(0, 2**300))
def test_mulx_adx_product_equals_the_generic_one(limbs, top, seed, exponent):
    # where the CPU has BMI2/ADX the kernels use a hand-scheduled CIOS product for moduli of up to
    # 32 limbs; it must give the same bytes as GMP's path, including moduli whose limbs are all ones
    # (every carry chain runs through) or barely above a limb boundary, and values near n
    if not montgomery.ADX:
        pytest.skip("the mulx/adx product is not in use (no BMI2/ADX, or FEDRISK_NATIVE_ADX=0)")
    rnd = np.random.default_rng(seed)
    bits = max(5, 64 * limbs - (0 if top != "low" else 63))
    if top == "ones":
        n = (1 << bits) - 1 - 2 * int(rnd.integers(0, 1 << 20))
    else:
        n = _odd(bits, rnd)
    vals = _residues(rnd, n, 6) + [n - 1, n - 2, 1]
    base = vals[0]
    blob = _blob(vals, n)
    idx = rnd.integers(-1, 9, (len(vals), 4))

    def run():
        return (montgomery.pow_list(n, blob, exponent),
                montgomery.grouped_products(n, blob, np.arange(len(vals)), np.arange(len(vals)) % 3, 3),
                montgomery.gather_products(montgomery.power_table(n, base, 9), idx, blob),
                montgomery.shift_products(n, blob, 3, 5))

    fast = run()
    with generic_product():
        slow = run()
    assert fast == slow
    assert _values(fast[0], n) == [pow(v, exponent, n) for v in vals]
