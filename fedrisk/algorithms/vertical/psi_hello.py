"""The hello that opens every pairwise PSI exchange, and the one function that checks a peer's.

ECDH (:mod:`~fedrisk.algorithms.vertical.psi_protocol` and its streaming path), RR22
(:mod:`~fedrisk.algorithms.vertical.rr22_psi`) and unbalanced PSI
(:mod:`~fedrisk.algorithms.vertical.unbalanced_psi`) all start the same way: each party sends
``<tag>.hello`` (kind ``public-parameter``) with its protocol version, its role, the settings both
must share, a SHA-256 check of the job's salt (never the salt) and its counts; a party that cannot
take part sends its hello with a ``refuse`` reason instead of counts. :func:`check_hello` checks the
peer's hello against this party's own, always in the same order, and turns each problem into one
line that names this party, the peer and the setting to fix:

1. not a hello of this protocol version -> :class:`ProtocolError` (run the same fedrisk at both);
2. a refusal -> :class:`ConfigError` quoting the peer's reason as the peer's (escaped, cut to 300
   characters);
3. the wrong role -> :class:`ConfigError` (the job spec decides roles);
4. a shared setting differs -> :class:`ConfigError` naming it and both values;
5. a different salt -> :class:`ConfigError`;
6. a count that is not an integer in ``1 .. 2**31 - 1`` -> :class:`ProtocolError`.

Protocol-specific fields (RR22's bucket size and item width, the unbalanced key epoch and cache
digest) are checked by the protocol after this.
"""
from __future__ import annotations

import hmac
from typing import Any, Mapping, Sequence

from fedrisk.errors import ConfigError, ProtocolError
from fedrisk.transport import expect
from fedrisk.transport.safe_text import safe_text

__all__ = ["check_hello", "MAX_COUNT"]

#: The largest id count a PSI hello may announce.
MAX_COUNT = 2**31 - 1


def check_hello(me: str, peer: str, theirs: Any, mine: Mapping[str, Any], *, protocol: str, peer_role: str,
                same: Sequence[str] = (), counts: Sequence[str] = (),
                role_fix: str = "exactly one party must lead") -> dict[str, Any]:
    """Check the peer's hello against this party's; return it, or raise one line (see the module docstring).

    Parameters
    ----------
    me, peer : str
        This party and the peer (both named in every error).
    theirs : Any
        What the peer sent as its hello (anything: it is checked here).
    mine : mapping
        This party's own hello: ``version``, ``role``, ``salt_check`` and every key of ``same``.
    protocol : str
        The protocol's name in messages ("PSI", "RR22", "unbalanced-PSI").
    peer_role : str
        The role the peer must have.
    same : sequence of str
        Settings both parties must hold equal (e.g. ``reveal``, ``casefold``).
    counts : sequence of str
        Fields that must be integers in ``1 .. MAX_COUNT`` (e.g. ``count``, ``batch``).
    role_fix : str
        What to do when the roles clash (appended to that error).

    Returns
    -------
    dict
        ``theirs``, now known to be a dict with these fields valid.
    """
    if not isinstance(theirs, dict) or theirs.get("version") != mine["version"]:
        got = theirs.get("version") if isinstance(theirs, dict) else type(theirs).__name__
        raise ProtocolError(f"{me}: party {peer!r} sent a {protocol} hello of another version ({safe_text(got, 40)}; "
                            f"{me!r} speaks version {mine['version']}); run the same fedrisk release at both parties")
    if "refuse" in theirs:
        # the peer's words, marked as such (a peer could otherwise put any sentence in our error line)
        raise ConfigError(f"party {me!r}: {peer!r} refused {protocol}: {safe_text(theirs['refuse'], 300)}")
    if theirs.get("role") != peer_role:
        raise ConfigError(f"{me}: {peer!r} acts as {protocol} {safe_text(theirs.get('role'), 40)} and {me!r} as "
                          f"{mine['role']}; {role_fix}")
    for k in same:
        if theirs.get(k) != mine[k]:
            raise ConfigError(f"{me}: {protocol} setting {k!r} differs: {me!r} uses {mine[k]!r}, {peer!r} uses "
                              f"{safe_text(repr(theirs.get(k)), 60)}; both must take it from the same job spec")
    check = theirs.get("salt_check")
    # compare_digest raises TypeError on non-ASCII text: a peer's junk must be a refusal, not a traceback
    if not isinstance(check, str) or not check.isascii() or not hmac.compare_digest(check, mine["salt_check"]):
        raise ConfigError(f"{me}: {peer!r} uses a different PSI salt; both parties must take it from the same job spec")
    for k in counts:
        v = theirs.get(k)
        if not expect.whole(v, 1) or v > MAX_COUNT:
            raise ProtocolError(f"{me}: party {peer!r} sent an invalid {protocol} {k} {safe_text(repr(v), 40)}")
    return theirs
