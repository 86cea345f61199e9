"""The one hello checker of every PSI protocol: each problem is one line naming both parties and the setting,
whatever the peer sent; and ECDH, RR22's checker and unbalanced PSI give the same answers through it."""
from __future__ import annotations

import numpy as np
import pytest

from fedrisk.algorithms.vertical import ub_store as st
from fedrisk.algorithms.vertical import unbalanced_psi as ub
from fedrisk.algorithms.vertical.psi_hello import MAX_COUNT, check_hello
from fedrisk.algorithms.vertical.psi_protocol import psi_align
from fedrisk.algorithms.vertical.unbalanced_psi import ub_align
from fedrisk.errors import ConfigError, FedriskError, ProtocolError
from fedrisk.runtime.threads import run_roles
from fedrisk.transport.channel import InMemoryNetwork

MINE = {"version": 3, "role": "leader", "reveal": "both", "casefold": False, "salt_check": "ab" * 32, "count": 5}
PEER = {**MINE, "role": "follower"}


def _check(theirs, **kw):
    return check_hello("a", "b", theirs, MINE, protocol="PSI", peer_role="follower", same=("reveal", "casefold"),
                       counts=("count",), **kw)


def test_a_matching_hello_is_returned():
    assert _check(dict(PEER)) == PEER


@pytest.mark.parametrize("theirs,error,match", [
    ("not a dict", ProtocolError, r"hello of another version \(str; 'a' speaks version 3\)"),
    ({**PEER, "version": 2}, ProtocolError, r"another version \(2; .*same fedrisk release"),
    ({**PEER, "version": "x" * 10**6}, ProtocolError, r"another version \(x{40}\.\.\."),
    ({**PEER, "refuse": "not ready\n2026-01-01 forged line"}, ConfigError, r"^party 'a': 'b' refused PSI: not ready\\n2026"),
    ({**PEER, "role": "leader"}, ConfigError, r"'b' acts as PSI leader and 'a' as leader; exactly one party must lead"),
    ({**PEER, "casefold": True}, ConfigError, r"PSI setting 'casefold' differs: 'a' uses False, 'b' uses True"),
    ({**PEER, "salt_check": "cd" * 32}, ConfigError, "'b' uses a different PSI salt"),
    ({**PEER, "salt_check": "é" * 64}, ConfigError, "different PSI salt"),  # compare_digest would raise TypeError
    ({**PEER, "salt_check": None}, ConfigError, "different PSI salt"),
    ({**PEER, "count": 0}, ProtocolError, "invalid PSI count 0"),
    ({**PEER, "count": True}, ProtocolError, "invalid PSI count True"),
    ({**PEER, "count": MAX_COUNT + 1}, ProtocolError, "invalid PSI count"),
    ({**PEER, "count": "9" * 10**5}, ProtocolError, "invalid PSI count '9+\\.\\.\\."),
])
def test_each_problem_is_one_line_naming_the_parties_and_setting(theirs, error, match):
    with pytest.raises(error, match=match) as ei:
        _check(theirs)
    assert "\n" not in str(ei.value) and len(str(ei.value)) < 600


def test_a_non_ascii_salt_check_is_a_refusal_at_both_protocols(tmp_path):
    """A peer's junk salt check must be a one-line ConfigError, not hmac's TypeError traceback."""
    def fake_follower(ch):
        hello = ch.recv("l", "psi.hello")
        ch.send("l", "psi.hello", {**hello, "role": "follower", "salt_check": "é" * 64}, kind="public-parameter")

    with pytest.raises(ConfigError, match="different PSI salt"):
        run_roles({"l": lambda ch: psi_align(ch, "f", [1, 2, 3], leader=True, salt="s"), "f": fake_follower})

    store = tmp_path / "bureau"
    st.create_key(store, "bureau")
    st.encode_ids([np.arange(50)], st.load_key(store, "bureau"), store, "bureau", "ids")

    def fake_lender(ch):
        ch.recv("bureau", "psi.ub.hello")
        ch.send("bureau", "psi.ub.hello", {"version": ub._VERSION, "role": "client", "salt_check": "é" * 64,
                                           "count": 3, "batch": 512, "fetch": True}, kind="public-parameter")

    net = InMemoryNetwork(["lender", "bureau"], recv_timeout=10.0, tag_prefixes=("psi.",))
    with pytest.raises(ConfigError, match="different PSI salt"):
        run_roles({"bureau": lambda ch: ub_align(ch, "lender", np.arange(50), key_holder=True, salt="s",
                                                 store_dir=store), "lender": fake_lender}, network=net)


def test_unbalanced_roles_clash_names_the_setting(tmp_path):
    """Two lenders (each thinks the other holds the key): one line naming psi.key_holder at each."""
    seen = {}

    def lender(me, peer):
        def go(ch):
            try:
                return ub_align(ch, peer, np.arange(10), key_holder=False, salt="s", store_dir=tmp_path / me)
            except FedriskError as e:
                seen[me] = str(e)
                raise
        return go

    net = InMemoryNetwork(["a", "b"], recv_timeout=5.0, tag_prefixes=("psi.",))
    with pytest.raises(FedriskError):
        run_roles({"a": lender("a", "b"), "b": lender("b", "a")}, network=net)
    assert set(seen) == {"a", "b"}
    assert all("acts as unbalanced-PSI client" in v and "psi.key_holder" in v and "\n" not in v for v in seen.values())


def test_rr22_hello_goes_through_the_same_checker():
    from fedrisk.algorithms.vertical import rr22_psi

    def hello(leader, **kw):
        def go(ch):
            peer = "payco" if ch.me == "lender" else "lender"
            args = dict(leader=leader, n=10, salt="s", casefold=False, reveal="both", tls=True)
            return rr22_psi._hello(ch, peer, "psi.rr22", **{**args, **kw})
        return go

    net = InMemoryNetwork(["lender", "payco"], recv_timeout=5.0, tag_prefixes=("psi.",))
    with pytest.raises(ConfigError, match=r"RR22 setting 'tls' differs: '(lender|payco)' uses (True|False), '(payco|lender)' uses (False|True)"):
        run_roles({"lender": hello(True), "payco": hello(False, tls=False)}, network=net)
    net = InMemoryNetwork(["lender", "payco"], recv_timeout=5.0, tag_prefixes=("psi.",))
    with pytest.raises(ConfigError, match="'(payco|lender)' acts as RR22 leader and '(lender|payco)' as leader"):
        run_roles({"lender": hello(True), "payco": hello(True)}, network=net)
    net = InMemoryNetwork(["lender", "payco"], recv_timeout=5.0, tag_prefixes=("psi.",))
    with pytest.raises(ProtocolError, match="invalid RR22 bucket size 3"):
        run_roles({"lender": hello(True), "payco": hello(False, bucket=3)}, network=net)
    net = InMemoryNetwork(["lender", "payco"], recv_timeout=5.0, tag_prefixes=("psi.",))
    got = run_roles({"lender": hello(True), "payco": hello(False, bucket=4096)}, network=net)
    assert got["lender"]["bucket"] == 4096 and got["payco"]["role"] == "leader"
