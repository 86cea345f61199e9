import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from fedrisk.errors import CodecError
from fedrisk.transport.codec import BigInts, decode, encode

DTYPES = ["bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float32", "float64"]


def roundtrip(body, **kw):
    frame = encode("job", "a", "b", "t.x", "model", body)
    return decode(frame, job="job", to="b", senders=["a"], **kw).body


@settings(max_examples=150, deadline=None)
@given(hnp.arrays(st.sampled_from(DTYPES), hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6)))
def test_arrays_of_every_dtype_and_shape_round_trip(arr):
    out = roundtrip({"a": arr})["a"]
    assert out.dtype == arr.dtype and out.shape == arr.shape
    np.testing.assert_array_equal(out, arr)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=2**4096), max_size=20))
def test_big_ints_round_trip_fixed_width(values):
    out = roundtrip(BigInts(values, width=513))
    assert out.values == values and out.width == 513


@settings(max_examples=100, deadline=None)
@given(st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20) | st.binary(max_size=20),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(alphabet="abcxyz_", min_size=1, max_size=5).filter(lambda k: not k.startswith("__")), kids, max_size=4),
    max_leaves=20))
def test_json_like_payloads_round_trip(obj):
    assert roundtrip(obj) == obj


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=400))
def test_decoder_fuzz_raises_only_codec_error(data):
    for frame in (data, b"FRK1" + data):
        try:
            decode(frame)
        except CodecError:
            pass


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_mutated_valid_frames_raise_only_codec_error(data):
    frame = bytearray(encode("job", "a", "b", "t.x", "model", {"w": np.arange(6.0), "c": BigInts([5, 7]), "s": "hi"}))
    for _ in range(data.draw(st.integers(1, 5))):
        i = data.draw(st.integers(0, len(frame) - 1))
        frame[i] = data.draw(st.integers(0, 255))
    try:
        decode(bytes(frame), job="job", to="b", senders=["a"])
    except CodecError:
        pass


def test_object_arrays_and_arbitrary_objects_are_refused():
    with pytest.raises(CodecError, match="dtype"):
        encode("job", "a", "b", "t", "model", np.array([object()], dtype=object))
    with pytest.raises(CodecError, match="no pickle"):
        encode("job", "a", "b", "t", "model", {1, 2})


def test_decode_refuses_wrong_job_recipient_sender_and_tag():
    frame = encode("job", "a", "b", "hlr.x", "model", 1)
    with pytest.raises(CodecError, match="job"):
        decode(frame, job="other")
    with pytest.raises(CodecError, match="addressed"):
        decode(frame, to="c")
    with pytest.raises(CodecError, match="unknown sender"):
        decode(frame, senders=["z"])
    with pytest.raises(CodecError, match="unknown tag"):
        decode(frame, tag_prefixes=("psi.",))
    assert decode(frame, job="job", to="b", senders=["a"], tag_prefixes=("hlr.",)).body == 1


def test_oversize_messages_are_refused_both_ways():
    with pytest.raises(CodecError, match="limit"):
        encode("job", "a", "b", "t", "model", np.zeros(1000), max_bytes=500)
    frame = encode("job", "a", "b", "t", "model", np.zeros(1000))
    with pytest.raises(CodecError, match="limit"):
        decode(frame, max_bytes=500)


def test_array_with_lying_shape_is_refused():
    frame = encode("job", "a", "b", "t", "model", np.zeros(4))
    forged = frame.replace(b"[4]", b"[9]")
    with pytest.raises(CodecError, match="needs"):
        decode(forged)


def test_unknown_kind_and_reserved_keys():
    with pytest.raises(CodecError, match="kind"):
        encode("job", "a", "b", "t", "secret-stuff", 1)
    with pytest.raises(CodecError, match="reserved"):
        encode("job", "a", "b", "t", "model", {"__nd__": 1})


def test_no_pickle_module_anywhere_in_the_package():
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parents[2] / "fedrisk"
    offenders = [str(p) for p in root.rglob("*.py") if re.search(r"^\s*(import pickle|from pickle|import cloudpickle|import dill)", p.read_text(), re.M)]
    assert offenders == []


def test_integers_beyond_the_largest_key_are_refused_both_ways_and_every_accepted_one_prints():
    """A peer's 10**5000 reached error messages that quote it: Python's repr refuses ints over 4,300 digits."""
    from fedrisk.transport.codec import MAX_INT_BITS, encode as enc

    with pytest.raises(CodecError, match="bit limit"):
        enc("j", "a", "b", "t", "control", {"n": 1 << (MAX_INT_BITS + 8)})
    big = (1 << MAX_INT_BITS) - 1  # the largest the codec carries (a Paillier hs at a 16,384-bit modulus)
    body = decode(enc("j", "a", "b", "t", "control", {"n": big})).body
    assert body["n"] == big and len(repr(body["n"])) > 4300
    # a crafted frame declaring a longer int is refused before it is converted
    frame = bytearray(enc("j", "a", "b", "t", "control", {"n": 1 << 60}))
    blob = (1 << (MAX_INT_BITS + 64)).to_bytes(MAX_INT_BITS // 8 + 9, "big")
    hdr_len = int.from_bytes(frame[4:8], "big")
    import json

    header = json.loads(frame[8:8 + hdr_len])
    header["body"]["n"]["__int__"] = [0, 0, len(blob)]
    raw = json.dumps(header, separators=(",", ":")).encode()
    with pytest.raises(CodecError, match="bit limit"):
        decode(b"FRK1" + len(raw).to_bytes(4, "big") + raw + blob)
