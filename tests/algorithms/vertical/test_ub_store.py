"""The unbalanced-PSI set-file codec (encoded set, index, lender cache): round trip and corruption."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from fedrisk.algorithms.vertical import ub_store as st
from fedrisk.errors import DataError


@settings(max_examples=60, deadline=None)
@given(hs.integers(0, 40), hs.integers(1, 20), hs.integers(1, 10**6), hs.text(max_size=16), hs.data())
def test_set_file_round_trip_and_any_damage_is_refused(count, width, epoch, fp, data):
    rng = np.random.default_rng(count * 31 + width)
    values = rng.integers(0, 256, size=(count, width), dtype=np.uint8)
    blob = st.encode_set({"format": "encoded", "epoch": epoch, "fingerprint": fp}, values)
    sf = st.decode_set(blob)
    assert np.array_equal(sf.values, values) and sf.header["epoch"] == epoch and sf.header["fingerprint"] == fp
    assert sf.header["count"] == count and sf.header["width"] == width
    # flip one byte anywhere, or cut the file: refused (never a wrong set)
    pos = data.draw(hs.integers(0, len(blob) - 1))
    bad = bytearray(blob)
    bad[pos] ^= data.draw(hs.integers(1, 255))
    try:
        other = st.decode_set(bytes(bad))
    except ValueError:
        pass
    else:  # only a change inside the JSON header that keeps it valid (e.g. a letter of the fingerprint)
        assert np.array_equal(other.values, values) and other.header != sf.header
    cut = data.draw(hs.integers(0, len(blob) - 1))
    with pytest.raises(ValueError):
        st.decode_set(blob[:cut])


def test_sort_order_is_bytewise():
    rng = np.random.default_rng(0)
    v = rng.integers(0, 256, size=(500, 12), dtype=np.uint8)
    v[:50, :8] = v[50, :8]  # equal heads, so the tail decides
    got = v[st.sort_order(v)]
    assert [bytes(r) for r in got] == sorted(bytes(r) for r in v)


def test_read_set_errors_are_one_line(tmp_path):
    with pytest.raises(DataError, match="is missing or unreadable; do X") as ei:
        st.read_set(tmp_path / "nope.bin", "the cache", "do X")
    assert "\n" not in str(ei.value)
    (tmp_path / "junk.bin").write_bytes(b"hello")
    with pytest.raises(DataError, match="is corrupt"):
        st.read_set(tmp_path / "junk.bin", "the cache", "do X")


def test_ids_sum_is_order_independent():
    d = np.random.default_rng(1).integers(0, 256, size=(100, 16), dtype=np.uint8)
    assert st.ids_sum(d) == st.ids_sum(d[::-1]) != st.ids_sum(d[1:])
