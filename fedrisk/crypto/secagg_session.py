"""Multi-round secure aggregation: Bonawitz et al. (CCS 2017) with the setup paid once per session.

:class:`SessionSecureAggregation` implements the same
:class:`~fedrisk.algorithms.horizontal.aggregation.Aggregation` interface as
:class:`~fedrisk.crypto.secure_aggregation.SecureAggregation`, whose single-round protocol spends
two of its four round trips (keys -> keylist, shares -> inbox) on setting up fresh keys for every
``tag``. Here that setup deals key material for a *batch* of ``rounds`` aggregations at once; each
later aggregation in the session costs one masked vector, one survivor list and one reveal per
party. All sub-messages use tags ``<tag>.sa.<step>``; a session is named by the tag of the
aggregation that set it up (``sid``).

Message flow (``C`` coordinator, ``P_i`` party ``i``, ``K`` = ``rounds``; ``R`` is the session's
roster, ``r`` the session round counter, both kept identically by every member)::

  Setup — only in the first aggregation of a session (none yet, or the batch is used up):
    P_i -> C  .sa.keys     c_pk_i, s_pk_i^0..s_pk_i^{K-1}, sig_i            public-parameter
              fresh X25519 pairs: c_* encrypts shares, one mask key pair s_*^k per round k;
              sig_i = ECDSA_P256(party TLS key, session|job|sid|i|c_pk_i|s_pk_i^*) when configured
    C -> P_i  .sa.keylist  threshold t, K, {j: keys_j} for j in U1          public-parameter
              P_i: verify every sig_j, t >= safe threshold of all the job's parties, |U1| >= t
    P_i -> C  .sa.shares   {j: AEAD_{k_ij}(share_j(s_sk_i^0..K-1) | share_j(b_i^0..K-1))}  ciphertext
              Shamir (threshold t, x = rank in U1) of every per-round mask key s_sk_i^k and of K
              fresh, independent 32-byte self-mask seeds b_i^k
    C -> P_i  .sa.inbox    U2 and {j: ciphertext from j for i}              ciphertext
              the roster R := U2, r := 0; the setup aggregation continues with its round below

  Every aggregation (round r of the session):
    P_i -> C  .sa.masked   y_i = enc(x_i) + PRG(b_i^r) + sum_{j in R, i<j} PRG(s_ij^r) - sum_{j in R, i>j} PRG(s_ij^r)
              s_ij^r = X25519(s_sk_i^r, s_pk_j^r), the PRG keyed by HKDF bound to job|sid|tag|r|pair  masked
    C -> P_i  .sa.unmask   survivors U3, dropped R \\ U3, round r             control
       (signed mode and R \\ U3 non-empty only: Bonawitz's consistency check)
    P_i -> C  .sa.confirm    ECDSA(session|job|sid|tag|r|U3)                 public-parameter
    C -> P_i  .sa.confirmed  {j: signature} for j in U3                     public-parameter
    P_i -> C  .sa.reveal   shares of b_j^r for j in U3, of s_sk_j^r for j dropped   plaintext-by-design
              then R := U3 and r := r + 1 at every party (a dropped party is out of the session)
    C: reconstruct from t reveals, subtract PRG(b_j^r) for survivors and the dangling pairwise
       masks between survivors and dropped parties; decode the sum over U3.

Mask graph. With ``graph = "sparse"`` (or ``"auto"`` above 10 parties) the pairwise masks and
Shamir shares follow SecAgg+'s Harary graph of degree ``k ~ 2 log2 n`` instead of the complete
graph: a party masks with its ``k`` neighbours only, deals shares of its secrets to them only
(threshold over the ``k + 1`` holders, named as ``degree`` in the key list), reveals shares of
its neighbourhood only, and a round with dropouts ends the session. Every party derives the graph
itself from the key list (:mod:`fedrisk.crypto.secagg_graph`, which also holds the security
argument). Per-party work per round is then ``O(k)`` key agreements and PRG expansions instead
of ``O(n)``, and the coordinator's reconstructions ``O(n k^2)`` instead of ``O(n^3)``.

Messages at the coordinator per aggregation, ``n`` parties: single-round mode ``7n`` (``9n``
signed: every round runs the confirm step); session mode ``3n`` (``5n`` in a signed round where
someone dropped), plus ``4n`` once per ``K`` aggregations for the setup. The coordinator's ``n``
sends of one step (key list, share relay, unmask request) go out together
(:meth:`~fedrisk.transport.channel.Channel.send_many`: concurrently over gRPC, one ledger sync for
the lot), so a step costs about one round trip, not ``n`` of them; what still grows with ``n`` is
the coordinator's CPU per message (about 1 ms, mostly gRPC/TLS). Newton LR's rounds that move run
one-shot instead (:class:`~fedrisk.crypto.secagg_oneshot.OptimisticSessionAggregation`: ``n``
messages per sum, no reveal), which halved the coordinator's messages per round.

Security argument
-----------------
*What the coordinator learns.* Within one round ``r`` the masks are exactly Bonawitz's: the
self-mask seed ``b_i^r`` and the mask keys ``s_sk_i^r`` are fresh, independent and used for this
round only, so each ``y_i`` alone is uniform in Z/2^64 and only ``sum_{i in U3} x_i`` comes out
of the unmasking; the coordinator also learns who dropped out when, and the public keys.

*What reuse across rounds changes.* Only *when* key material is dealt, not what any reveal
exposes. A session deals ``K`` independent seeds and ``K`` independent key pairs per party; round
``r`` uses index ``r`` only. Revealing ``b_j^r`` (``j`` survived) or ``s_sk_j^r`` (``j`` dropped)
therefore says nothing about any other round — deliberately *not* a PRF of one master seed, nor
per-round masks derived from one pairwise secret: reconstructing a dropped party's long-term
pairwise secret would let the coordinator strip the pairwise masks of every earlier round in
which that party survived and its self-mask was revealed, i.e. recover all its earlier inputs.
The per-round X25519 keys close that. What a round reveals is bounded per index by one rule that
every honest party enforces on its own: it reveals shares for index ``r`` only while its own
counter is at ``r`` (the coordinator's ``round`` must match, else it refuses), then advances, so
it reveals at most one kind of share (``b`` *or* ``s_sk``) for each party and index, and never
twice — even when a deviating coordinator schedules rounds differently for different parties. A
party whose round fails after it masked (timeout, refusal) leaves the session at once, so an index
it has masked with is never used again; a coordinator whose round fails starts a new session.
Getting both secrets of a victim ``j`` for one index therefore needs ``t`` shares of each from
disjoint sets of honest parties plus the colluders, which :func:`default_threshold`'s
``t > (n + colluders) / 2`` rules out exactly as in the single-round protocol. The parties also
refuse a survivor list below ``t`` and a tag used before in the session (a repeated tag would
repeat nothing — every round has fresh keys — but it is a coordinator bug worth stopping).

*What a dropped party's reveal implies.* When ``j`` is dropped in round ``r`` the survivors reveal
shares of ``s_sk_j^r`` only: the coordinator learns ``j``'s pairwise masks *of round r*. ``j``'s
round-``r`` vector (if it arrives late) stays hidden by ``b_j^r``, which honest parties never
reveal once they were told ``j`` dropped; its other rounds use other keys. ``j`` is then out for
the rest of the session at every honest member (removed from ``R``, so nobody masks with it or
reveals anything of it again); it can rejoin only through a fresh setup, which happens when the
batch is used up (it is then told ``excluded`` until that setup).

*When the consistency check is skipped, and why that is safe.* In signed mode the confirm step
runs whenever the survivor list drops somebody, i.e. whenever a party is about to reveal a
pairwise (mask-key) share. It is skipped when nobody dropped: the party then reveals self-mask
shares only. The attack the check prevents is a split view — some honest parties told ``j``
survived (revealing ``b_j^r``), others told ``j`` dropped (revealing ``s_sk_j^r``). The second
group still runs the check, so it needs ``t`` signatures on its view. The check for the first
group would need ``t`` signatures on the full roster, which can only come from that group's honest
parties, ``j`` itself and colluders — the very parties whose ``t`` shares of ``b_j^r`` the attack
needs anyway. So skipping it grants the coordinator nothing it could not already show, while
saving two messages per party in every round without dropouts.

Against a malicious coordinator the same limits as the single-round protocol apply (see
:class:`~fedrisk.crypto.secure_aggregation.SecureAggregation`): it can exclude parties and learn
sums of any ``t`` of them over rounds. Without ``signing_key_pem``/``peer_certs_pem`` only the
honest-but-curious guarantee holds.

State. Session state is held per channel (weakly: it ends with the job's channel) and per
party/coordinator role, so one instance may serve several roles in-process and be reused for a
later job. A party restarted mid-session has lost its keys: it re-advertises keys and is told
``excluded`` until the next setup; a restarted coordinator starts a new session, which parties
still in the old one cannot follow (restart the whole job, as a resume does).
"""
from __future__ import annotations

import os
import secrets
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from fedrisk.algorithms.horizontal.aggregation import AggregateResult
from fedrisk.crypto import ring64, shamir
from fedrisk.crypto.prg_mask import context, mask
from fedrisk.crypto.secagg_graph import choose_degree, graph_seed, neighbours
from fedrisk.crypto.secure_aggregation import (
    _KEY_BYTES, _NONCE_BYTES, _SEED_BYTES, DEFAULT_COLLUDERS, SecureAggregation, _gather, _notify, _raw_priv,
    _raw_pub, _require, _share_key, _warn_if_unsafe, default_threshold)
from fedrisk.errors import ConfigError, CryptoError, ProtocolError
from fedrisk.transport.channel import Channel

__all__ = ["SessionSecureAggregation", "DEFAULT_ROUNDS"]

_PROTO = "fedrisk.secagg.session.v1"
#: aggregations per setup: 30 trees of depth 3 (93 aggregations) need two setups
DEFAULT_ROUNDS = 64
_MAX_ROUNDS = 4096


@dataclass
class _PartySession:
    sid: str
    rounds: int
    t: int
    xs: dict[str, int]                      # Shamir x-coordinate of each setup member
    roster: list[str]                       # members still in (sorted)
    s_sk: list[X25519PrivateKey]            # this party's per-round mask keys
    s_pk: dict[str, list[bytes]]            # every member's per-round mask public keys
    b: list[bytes]                          # this party's per-round self-mask seeds
    held: dict[str, tuple[list[bytes], list[bytes]]]  # j -> (shares of s_sk_j^k, shares of b_j^k)
    r: int = 0
    used: set = field(default_factory=set)
    dead: bool = False
    nbrs: dict[str, frozenset] = field(default_factory=dict)  # mask/share graph over the setup members
    degree: int = 0                                            # k; n - 1 for the complete graph


@dataclass
class _CoordSession:
    sid: str
    rounds: int
    t: int
    xs: dict[str, int]
    roster: list[str]
    s_pk: dict[str, list[bytes]]
    r: int = 0
    used: set = field(default_factory=set)
    nbrs: dict[str, frozenset] = field(default_factory=dict)
    degree: int = 0

    @property
    def sparse(self) -> bool:
        return self.degree < len(self.xs) - 1


class SessionSecureAggregation(SecureAggregation):
    """Secure aggregation whose key setup and Shamir dealing cover ``rounds`` aggregations.

    Parameters
    ----------
    rounds : int
        Aggregations per setup (default :data:`DEFAULT_ROUNDS`). Larger batches save setups; the
        setup's share traffic grows as ``2 * rounds * n^2`` Shamir shares of 66 bytes.
    round_timeout : float, optional
        Seconds the coordinator waits for the masked vectors of a round after the setup — the
        first message of such a round, sent after the parties' local work. Default: ``key_timeout``,
        else the channel's receive timeout. A party silent for that long is dropped for the rest
        of the session.
    graph : {"auto", "complete", "sparse"}
        Who masks with whom (:mod:`fedrisk.crypto.secagg_graph`): ``complete`` is Bonawitz's graph;
        ``sparse`` is SecAgg+'s Harary graph of degree ``k ~ 2 log2 n`` with Shamir shares to
        neighbours only and a threshold over the ``k + 1`` share holders; ``auto`` (default) keeps
        the complete graph up to 10 parties.
    degree : int, optional
        Explicit even degree for the sparse graph.
    **kwargs
        As :class:`~fedrisk.crypto.secure_aggregation.SecureAggregation` (threshold, colluders,
        frac_bits, dropout_timeout, key_timeout, signing_key_pem, peer_certs_pem, parties).

    Notes
    -----
    The protocol, what each party learns and why the batch does not weaken Bonawitz's guarantees
    are in the module docstring. Every member of a session takes part in every aggregation of the
    session until it drops out: an algorithm that aggregates over changing subsets should use the
    single-round :class:`~fedrisk.crypto.secure_aggregation.SecureAggregation`.
    """

    def __init__(self, rounds: int = DEFAULT_ROUNDS, round_timeout: float | None = None, threshold: int | None = None,
                 frac_bits: int = ring64.DEFAULT_FRAC_BITS, dropout_timeout: float = 10.0,
                 key_timeout: float | None = None, signing_key_pem: bytes | None = None,
                 peer_certs_pem: Mapping[str, bytes] | None = None, parties: Sequence[str] | None = None,
                 colluders: int = DEFAULT_COLLUDERS, graph: str = "auto", degree: int | None = None) -> None:
        choose_degree(64, graph, colluders if isinstance(colluders, int) else 1, degree)  # validates graph/degree
        if not isinstance(rounds, int) or isinstance(rounds, bool) or not 1 <= rounds <= _MAX_ROUNDS:
            raise ConfigError(f"secure aggregation: rounds per session must be an integer in 1..{_MAX_ROUNDS}, "
                              f"got {rounds!r}")
        super().__init__(threshold=threshold, frac_bits=frac_bits, dropout_timeout=dropout_timeout,
                         key_timeout=key_timeout, signing_key_pem=signing_key_pem, peer_certs_pem=peer_certs_pem,
                         parties=parties, colluders=colluders)
        self.rounds = rounds
        self.round_timeout = round_timeout
        self.graph = graph
        self.degree = degree

    def _degree(self, n: int) -> int:
        return choose_degree(n, self.graph, self.colluders, self.degree)

    def _threshold_for(self, n: int, k: int) -> int:
        """Configured threshold, else the safe one over each secret's holders (all n, or k + 1 neighbours)."""
        if self.threshold is not None:
            return self.threshold
        return default_threshold(n if k >= n - 1 else k + 1, self.colluders)

    @property
    def _signed(self) -> bool:
        return self.signing_key_pem is not None or self.peer_certs_pem is not None

    def _sessions(self, channel: Channel) -> dict:
        """Session state of the job behind ``channel``; it lives as long as the channel does.

        Keyed by the channel object (weakly), not only by the job name, so an instance reused for a
        second job with the same name (benchmarks, notebooks) starts a fresh session.
        """
        with self._pending_lock():
            per_channel = self.__dict__.setdefault("_session_state", weakref.WeakKeyDictionary())
            return per_channel.setdefault(channel, {})

    # -- party side ------------------------------------------------------------------------------
    def _needs_setup(self, channel: Channel) -> bool:
        st = self._sessions(channel).get(("party", channel.me, channel.job))
        return st is None or st.dead or st.r >= st.rounds

    def prepare(self, channel: Channel, coordinator: str, tag: str) -> None:
        """Party side, optional: advertise the keys of a new session now, if ``tag`` starts one.

        A no-op while this party's session still has unused rounds (the coordinator then expects
        the masked vector first). Lets an algorithm overlap the setup with local training.
        """
        me, job = channel.me, channel.job
        if not self._needs_setup(channel):
            return
        with self._pending_lock():
            if (me, job, tag) in self.__dict__["_pending"]:
                return
            c_sk = X25519PrivateKey.generate()
            s_sks = [X25519PrivateKey.generate() for _ in range(self.rounds)]
            self.__dict__["_pending"][(me, job, tag)] = (c_sk, s_sks)
        c_pk, s_pk = _raw_pub(c_sk), b"".join(_raw_pub(k) for k in s_sks)
        sig = self._sign(_session_keys_message(job, tag, me, c_pk, s_pk))
        channel.send(coordinator, f"{tag}.sa.keys", {"c_pk": c_pk, "s_pk": s_pk, "sig": sig}, kind="public-parameter")

    def submit(self, channel: Channel, coordinator: str, tag: str, vector: np.ndarray) -> None:
        """Party side: add ``vector`` to the masked sum under ``tag`` (setting up a session first if needed).

        Returns once this party has revealed its shares, or earlier if it was excluded or dropped
        (its vector is then not in the sum, and it stays out until the next setup).
        """
        me, job = channel.me, channel.job
        x = np.asarray(vector, dtype=np.float64)
        if x.ndim != 1:
            raise CryptoError(f"{me}: secure aggregation sums 1-D vectors; got shape {x.shape}")
        if not np.all(np.isfinite(x)):
            raise CryptoError(f"{me}: the vector for {tag!r} holds NaN or infinity; nothing was sent")
        if self._needs_setup(channel):
            if not self._party_setup(channel, coordinator, tag):
                return
        st: _PartySession = self._sessions(channel)[("party", me, job)]
        if tag in st.used:
            raise ProtocolError(f"{me}: aggregation tag {tag!r} was already used in this secure-aggregation session")
        st.used.add(tag)
        y = self._session_mask(job, tag, me, x, st)
        try:
            self._round(channel, coordinator, tag, st, y)
        except BaseException:
            # whatever went wrong after index r was put to use (timeout, refusal, crash), this party
            # never uses or reveals anything of this session again: the next aggregation sets up afresh
            st.dead = True
            raise

    def _round(self, channel: Channel, coordinator: str, tag: str, st: _PartySession, y: np.ndarray) -> None:
        me, r = channel.me, st.r
        self._send_masked(channel, coordinator, tag, y)
        req = channel.recv(coordinator, f"{tag}.sa.unmask")
        roster = set(st.roster)
        survivors = self._check_members(me, tag, req, "survivors", roster, st.t, "sent their masked vectors",
                                        need_me=False)
        dropped = req.get("dropped")
        if not isinstance(dropped, list) or not all(isinstance(d, str) for d in dropped) \
                or set(dropped) & set(survivors) or set(dropped) | set(survivors) != roster:
            raise ProtocolError(f"{me}: the coordinator's dropout list for {tag!r} is inconsistent "
                                f"(dropped {dropped}, survivors {survivors}, expected a split of {sorted(roster)}); "
                                f"refusing to reveal shares")
        if req.get("round") != r:
            raise ProtocolError(f"{me}: the coordinator asks to unmask round {req.get('round')!r} of session "
                                f"{st.sid!r} under {tag!r}, this party is at round {r}; refusing to reveal shares")
        if me not in survivors:
            st.dead = True  # dropped (late): out of this session for good
            return
        sparse = st.degree < len(st.xs) - 1
        if sparse and len(dropped) + self.colluders > st.degree - 1:
            st.dead = True
            raise ProtocolError(f"{me}: {len(dropped)} parties dropped in round {r} of {tag!r}; with {self.colluders} "
                                f"colluder(s) the sparse mask graph of degree {st.degree} could split into partial sums. "
                                f"Refusing to reveal shares (use graph = \"complete\" or a larger degree)")
        if dropped and self._signed:
            self._consistency_check_round(channel, coordinator, tag, st, survivors)
        # advance before revealing: index r is never revealed again by this party, whatever comes next
        st.r += 1
        st.roster = sorted(survivors)
        mine = st.nbrs.get(me, frozenset()) | {me}
        reveal = {"s": {j: st.held[j][0][r] for j in dropped if j in mine},
                  "b": {j: st.held[j][1][r] for j in survivors if j in mine}}
        if sparse and dropped:
            st.dead = True  # a sparse session ends after a dropout: the next sum deals a new graph over the survivors
        channel.send(coordinator, f"{tag}.sa.reveal", reveal, kind="plaintext-by-design")

    def _party_setup(self, channel: Channel, coordinator: str, tag: str) -> bool:
        """Steps keys -> keylist -> shares -> inbox; stores the session. False if excluded."""
        me, job = channel.me, channel.job
        self._sessions(channel).pop(("party", me, job), None)
        self.prepare(channel, coordinator, tag)
        with self._pending_lock():
            c_sk, s_sks = self.__dict__["_pending"].pop((me, job, tag))
        c_pk, s_pk = _raw_pub(c_sk), b"".join(_raw_pub(k) for k in s_sks)
        msg = channel.recv(coordinator, f"{tag}.sa.keylist")
        if isinstance(msg, dict) and msg.get("abort"):
            raise ProtocolError(f"{me}: the coordinator aborted aggregation {tag!r}: {msg['abort']}")
        if not isinstance(msg, dict) or msg.get("excluded"):
            return False
        if msg.get("rounds") != self.rounds:
            raise ProtocolError(f"{me}: the coordinator's session for {tag!r} has {msg.get('rounds')!r} rounds, this "
                                f"party is configured for {self.rounds}; set the same value everywhere")
        keys, t = self._check_session_keylist(channel, tag, msg, c_pk, s_pk)
        members = sorted(keys)
        xs = {p: k + 1 for k, p in enumerate(members)}
        deg = self._degree(len(members))
        nbrs = neighbours(members, deg, graph_seed(job, tag, {p: keys[p][0] + keys[p][1] for p in members}))
        K = self.rounds
        b = [secrets.token_bytes(_SEED_BYTES) for _ in range(K)]
        points = [xs[p] for p in sorted(nbrs[me] | {me})]
        s_sh = [shamir.split_bytes(_raw_priv(k), t, points) for k in s_sks]
        b_sh = [shamir.split_bytes(seed, t, points) for seed in b]
        share_keys = {j: _share_key(c_sk, keys[j][0], job, tag, me, j) for j in nbrs[me]}
        out = {}
        for j in members:
            if j in nbrs[me]:
                nonce = os.urandom(_NONCE_BYTES)
                plain = b"".join(s[xs[j]] for s in s_sh) + b"".join(s[xs[j]] for s in b_sh)
                out[j] = nonce + ChaCha20Poly1305(share_keys[j]).encrypt(nonce, plain, context(_PROTO, job, tag, me, j))
        channel.send(coordinator, f"{tag}.sa.shares", out, kind="ciphertext")
        inbox = channel.recv(coordinator, f"{tag}.sa.inbox")
        u2 = self._check_members(me, tag, inbox, "members", set(members), t, "sent their shares")
        if u2 is None:
            return False
        got = inbox.get("shares")
        expect = set(u2) & nbrs[me]
        if not isinstance(got, dict) or set(got) != expect:
            raise ProtocolError(f"{me}: the coordinator's share relay for {tag!r} does not hold one share from each of "
                                f"{sorted(expect)}")
        SB = shamir.SHARE_BYTES
        held = {me: ([s[xs[me]] for s in s_sh], [s[xs[me]] for s in b_sh])}
        for j, ct in got.items():
            if not isinstance(ct, bytes) or len(ct) != _session_share_ct(K):
                raise ProtocolError(f"{me}: the encrypted share from party {j!r} under {tag!r} is malformed")
            try:
                plain = ChaCha20Poly1305(share_keys[j]).decrypt(ct[:_NONCE_BYTES], ct[_NONCE_BYTES:],
                                                                context(_PROTO, job, tag, j, me))
            except InvalidTag:
                raise ProtocolError(f"{me}: the encrypted share from party {j!r} under {tag!r} does not decrypt "
                                    f"(tampered in transit or not meant for {me!r})") from None
            held[j] = ([plain[k * SB:(k + 1) * SB] for k in range(K)],
                       [plain[(K + k) * SB:(K + k + 1) * SB] for k in range(K)])
        s_pk_of = {p: _split_pks(keys[p][1]) for p in u2}
        self._sessions(channel)[("party", me, job)] = _PartySession(
            sid=tag, rounds=K, t=t, xs=xs, roster=list(u2), s_sk=s_sks, s_pk=s_pk_of, b=b, held=held, nbrs=nbrs,
            degree=deg)
        return True

    def _check_session_keylist(self, channel: Channel, tag: str, msg: dict, c_pk: bytes, s_pk: bytes
                               ) -> tuple[dict[str, tuple[bytes, bytes]], int]:
        me, job = channel.me, channel.job
        raw = msg.get("keys")
        if not isinstance(raw, dict):
            raise ProtocolError(f"{me}: the coordinator's key list for {tag!r} is malformed")
        keys = {p: _parse_session_keys(p, e, tag, self.rounds) for p, e in raw.items()}
        if self.parties is not None and not set(keys) <= set(self.parties):
            raise ProtocolError(f"{me}: the coordinator's key list for {tag!r} names parties outside the job: "
                                f"{sorted(set(keys) - set(self.parties))}; refusing")
        n_ref = len(self.parties) if self.parties is not None else len(keys)
        if keys.get(me) != (c_pk, s_pk):
            raise ProtocolError(f"{me}: the coordinator's key list for {tag!r} does not carry this party's own public keys "
                                f"unchanged; refusing (possible key substitution)")
        every = [c for c, _ in keys.values()] + [k for _, s in keys.values() for k in _split_pks(s)]
        if len(set(every)) != len(every):
            raise ProtocolError(f"{me}: the key list for {tag!r} repeats a public key; refusing")
        if self.peer_certs_pem is not None:
            for p, (cp, sp) in keys.items():
                if p != me:
                    self._verify(p, _session_keys_message(job, tag, p, cp, sp), raw[p].get("sig"),
                                 f"session public keys for {tag!r}")
        t = msg.get("threshold")
        if not isinstance(t, int) or isinstance(t, bool):
            raise ProtocolError(f"{me}: the coordinator sent no threshold for {tag!r}")
        deg = self._degree(len(keys))
        # the key list names the degree only for a sparse graph (complete-graph messages are unchanged)
        if msg.get("degree", len(keys) - 1) != deg:
            raise ProtocolError(f"{me}: the coordinator's mask graph for {tag!r} has degree {msg.get('degree')!r}, this "
                                f"party computes {deg} for {len(keys)} parties (graph = {self.graph!r}); set the same "
                                f"security.secure_aggregation_graph everywhere")
        holders = n_ref if deg >= len(keys) - 1 else deg + 1  # sparse: each secret's shares sit with k + 1 holders
        safe = default_threshold(holders, self.colluders)
        if self.threshold is not None:
            if t != self.threshold:
                raise ProtocolError(f"{me}: the coordinator uses threshold {t} for {tag!r}, this party is configured "
                                    f"for {self.threshold}; set the same threshold everywhere")
            _warn_if_unsafe(t, holders, self.colluders, me)
        elif t < safe:
            raise ProtocolError(f"{me}: the coordinator's threshold {t} for {tag!r} is below the safe threshold "
                                f"{safe} for {holders} share holders and {self.colluders} colluder(s) "
                                f"(t > (holders + colluders)/2); refusing")
        if len(keys) < max(t, 2):
            raise ProtocolError(f"{me}: only {len(keys)} parties advertised keys for {tag!r}, fewer than the "
                                f"threshold {max(t, 2)}")
        return keys, t

    def _session_mask(self, job: str, tag: str, me: str, x: np.ndarray, st: _PartySession) -> np.ndarray:
        try:
            y = ring64.encode(x, self.frac_bits, n_summands=len(st.roster))
        except CryptoError as e:
            raise CryptoError(f"{me}: {e}") from None
        r = st.r
        y = y + mask(st.b[r], _self_info(job, st.sid, tag, r, me), len(y))
        return _add_pairwise_masks(y, job, tag, me, st)

    def _consistency_check_round(self, channel: Channel, coordinator: str, tag: str, st: _PartySession,
                                 survivors: list[str]) -> None:
        """The single-round check, on this session round's survivor message."""
        msg = _round_survivors_message(channel.job, st.sid, tag, st.r, survivors)
        self._consistency_check(channel, coordinator, tag, survivors, st.t, msg=msg)

    # -- coordinator side ------------------------------------------------------------------------
    def collect(self, channel: Channel, parties: Sequence[str], tag: str, length: int) -> AggregateResult:
        """Coordinator side: set up a session if needed, then run one round; return the sum over the survivors.

        Raises
        ------
        ProtocolError
            Fewer than the threshold of parties remain at some step, or a party sent something
            malformed or wrongly signed (the message names the party).
        """
        job = channel.job
        parties = sorted(parties)
        if len(parties) < 2:
            raise ConfigError(f"secure aggregation needs at least 2 parties, got {parties}: with one, its "
                              f"vector would be the sum. Use PlainAggregation explicitly for a single party")
        sessions = self._sessions(channel)
        key = ("coordinator", channel.me, job)
        st: _CoordSession | None = sessions.get(key)
        if st is None or st.r >= st.rounds:
            sessions.pop(key, None)
            st = self._coord_setup(channel, parties, tag)
            sessions[key] = st
            first_timeout = self.dropout_timeout  # the parties are already past local training
        else:
            outsiders = [p for p in parties if p not in st.roster]
            # a dropped or restarted party re-advertises keys: tell it it is out until the next setup
            _notify(channel, outsiders, f"{tag}.sa.keylist", {"excluded": True})
            first_timeout = next(v for v in (self.round_timeout, self.key_timeout, channel.recv_timeout) if v is not None)
        if tag in st.used:
            raise ProtocolError(f"secure aggregation: tag {tag!r} was already used in session {st.sid!r}")
        st.used.add(tag)
        try:
            return self._coord_round(channel, parties, tag, length, st, first_timeout)
        except BaseException:
            sessions.pop(key, None)  # a failed round ends the session; the next aggregation sets up afresh
            raise

    def _coord_round(self, channel: Channel, parties: list[str], tag: str, length: int, st: _CoordSession,
                     first_timeout: float) -> AggregateResult:
        job = channel.job
        t, r = st.t, st.r
        asked = [p for p in st.roster if p in parties]
        gone = self.__dict__.setdefault("_gone", set())
        # a party that dropped out earlier is not in the roster; one that went silent gets the short timeout
        masked = _gather(channel, [p for p in asked if p not in gone], f"{tag}.sa.masked", first_timeout)
        masked.update(_gather(channel, [p for p in asked if p in gone], f"{tag}.sa.masked", self.dropout_timeout))
        for p, y in masked.items():
            if not isinstance(y, np.ndarray) or y.dtype != np.uint64 or y.shape != (length,):
                raise ProtocolError(f"secure aggregation: party {p!r} sent a masked vector of "
                                    f"{getattr(y, 'dtype', type(y).__name__)} {getattr(y, 'shape', '')} under {tag!r}; "
                                    f"expected uint64 ({length},)")
        u3 = sorted(masked)
        dropped = [p for p in st.roster if p not in masked]
        gone.difference_update(u3)
        gone.update(dropped)
        req = {"survivors": u3, "dropped": dropped, "round": r}
        channel.broadcast(u3, f"{tag}.sa.unmask", req, kind="control")
        _notify(channel, [p for p in dropped if p in parties], f"{tag}.sa.unmask", req)
        st.roster = u3
        st.r += 1
        if st.sparse and dropped:
            st.r = st.rounds  # a sparse session ends after a dropout (as at every party): the next sum sets up afresh
            if len(dropped) + self.colluders > st.degree - 1:
                raise ProtocolError(f"secure aggregation {tag!r}: {len(dropped)} parties dropped ({dropped}); the sparse "
                                    f"mask graph of degree {st.degree} tolerates at most "
                                    f"{st.degree - 1 - self.colluders} per round, so the parties refuse to unmask")
        _require(len(u3), t, tag, "sent their masked vectors", asked, u3)

        if dropped and self._signed:
            deadline = time.monotonic() + self.dropout_timeout
            conf = _gather(channel, u3, f"{tag}.sa.confirm", deadline=deadline)
            sigs = {p: m.get("sig") if isinstance(m, dict) else None for p, m in conf.items()}
            if self.peer_certs_pem is not None:
                msg = _round_survivors_message(job, st.sid, tag, r, u3)
                for p, sig in sigs.items():
                    self._verify(p, msg, sig, f"survivor list for {tag!r}")
            channel.broadcast(sorted(conf), f"{tag}.sa.confirmed", sigs, kind="public-parameter")
            _require(len(conf), t, tag, "confirmed the survivor list", u3, sorted(conf))

        deadline = time.monotonic() + self.dropout_timeout
        reveals = _gather(channel, u3, f"{tag}.sa.reveal", deadline=deadline)
        for p, m in reveals.items():
            mine = st.nbrs[p] | {p}
            ok = isinstance(m, dict) and isinstance(m.get("s"), dict) and isinstance(m.get("b"), dict) \
                and set(m["s"]) == set(dropped) & mine and set(m["b"]) == set(u3) & mine \
                and all(isinstance(v, bytes) for v in (*m["s"].values(), *m["b"].values()))
            if not ok:
                raise ProtocolError(f"secure aggregation: party {p!r} revealed malformed shares for {tag!r}")
        _require(len(reveals), t, tag, "revealed their shares", u3, sorted(reveals))

        def recover(kind: str, of: str) -> bytes:
            got = {st.xs[p]: reveals[p][kind][of] for p in reveals if of in reveals[p][kind]}
            try:
                return shamir.reconstruct_bytes(got, t, _KEY_BYTES)
            except CryptoError as e:
                raise ProtocolError(f"secure aggregation: cannot reconstruct the secret of party {of!r} for {tag!r}: "
                                    f"{e}") from None

        total = np.zeros(length, dtype=np.uint64)
        for p in u3:
            total += masked[p]
            total -= mask(recover("b", p), _self_info(job, st.sid, tag, r, p), length)
        for j in dropped:
            s_sk_j = X25519PrivateKey.from_private_bytes(recover("s", j))
            if _raw_pub(s_sk_j) != st.s_pk[j][r]:
                raise ProtocolError(f"secure aggregation: the reconstructed mask key of dropped party {j!r} does not "
                                    f"match its public key for {tag!r}; a party revealed a wrong share")
            for i in (p for p in u3 if p in st.nbrs[j]):
                m = mask(s_sk_j.exchange(X25519PublicKey.from_public_bytes(st.s_pk[i][r])),
                         _round_pair_info(job, st.sid, tag, r, i, j), length)
                if i < j:
                    total -= m
                else:
                    total += m
        return AggregateResult(ring64.decode(total, self.frac_bits), u3)

    def _coord_setup(self, channel: Channel, parties: list[str], tag: str) -> _CoordSession:
        job = channel.job
        t = self._threshold_for(len(parties), self._degree(len(parties)))
        if not 2 <= t <= len(parties):
            raise ConfigError(f"secure aggregation threshold {t} must lie in 2..{len(parties)} (the number of parties)")
        if self.threshold is not None:
            _warn_if_unsafe(t, len(parties), self.colluders, "coordinator")
        gone = self.__dict__.setdefault("_gone", set())
        raw = _gather(channel, [p for p in parties if p not in gone], f"{tag}.sa.keys",
                      channel.recv_timeout if self.key_timeout is None else self.key_timeout)
        raw.update(_gather(channel, [p for p in parties if p in gone], f"{tag}.sa.keys", self.dropout_timeout))
        gone.difference_update(raw)
        gone.update(p for p in parties if p not in raw)
        keys = {p: _parse_session_keys(p, m, tag, self.rounds) for p, m in raw.items()}
        if self.peer_certs_pem is not None:
            try:
                for p, (cp, sp) in keys.items():
                    self._verify(p, _session_keys_message(job, tag, p, cp, sp), raw[p].get("sig"),
                                 f"session public keys for {tag!r}")
            except ProtocolError as e:
                _notify(channel, parties, f"{tag}.sa.keylist", {"abort": str(e)})
                raise
        u1 = sorted(keys)
        deg = self._degree(len(u1))
        if self.threshold is None and deg < len(u1) - 1:
            t = default_threshold(deg + 1, self.colluders)  # sparse: over each secret's k + 1 holders
        nbrs = neighbours(u1, deg, graph_seed(job, tag, {p: keys[p][0] + keys[p][1] for p in u1}))
        keylist = {"threshold": t, "rounds": self.rounds, "keys": {p: raw[p] for p in u1}}
        if deg < len(u1) - 1:
            keylist["degree"] = deg
        channel.broadcast(u1, f"{tag}.sa.keylist", keylist, kind="public-parameter")
        _notify(channel, [p for p in parties if p not in keys], f"{tag}.sa.keylist", {"excluded": True})
        _require(len(u1), t, tag, "advertised keys", parties, u1)

        deadline = time.monotonic() + self.dropout_timeout
        shares = _gather(channel, u1, f"{tag}.sa.shares", deadline=deadline)
        ct_len = _session_share_ct(self.rounds)
        for p, m in shares.items():
            if not isinstance(m, dict) or set(m) != nbrs[p] or \
                    not all(isinstance(c, bytes) and len(c) == ct_len for c in m.values()):
                raise ProtocolError(f"secure aggregation: party {p!r} sent malformed encrypted shares for {tag!r}")
        u2 = sorted(shares)
        channel.send_many({p: {"members": u2, "shares": {j: shares[j][p] for j in u2 if j in nbrs[p]}} for p in u2},
                          f"{tag}.sa.inbox", kind="ciphertext")
        _notify(channel, [p for p in u1 if p not in shares], f"{tag}.sa.inbox", {"members": u2, "shares": {}})
        _require(len(u2), t, tag, "sent their encrypted shares", u1, u2)
        return _CoordSession(sid=tag, rounds=self.rounds, t=t, xs={p: k + 1 for k, p in enumerate(u1)},
                             roster=u2, s_pk={p: _split_pks(keys[p][1]) for p in u2}, nbrs=nbrs, degree=deg)


# -- helpers ----------------------------------------------------------------------------------
def _add_pairwise_masks(y: np.ndarray, job: str, tag: str, me: str, st: _PartySession) -> np.ndarray:
    """``y`` plus this party's round-``st.r`` pairwise masks with every other roster member (in place)."""
    n, r = len(y), st.r
    mine = st.nbrs[me] if st.nbrs else None
    for j in st.roster:
        if j == me or (mine is not None and j not in mine):
            continue
        m = mask(st.s_sk[r].exchange(X25519PublicKey.from_public_bytes(st.s_pk[j][r])),
                 _round_pair_info(job, st.sid, tag, r, me, j), n)
        if me < j:
            y += m
        else:
            y -= m
    return y


def _session_share_ct(rounds: int) -> int:
    return _NONCE_BYTES + 2 * rounds * shamir.SHARE_BYTES + 16


def _split_pks(blob: bytes) -> list[bytes]:
    return [blob[k:k + _KEY_BYTES] for k in range(0, len(blob), _KEY_BYTES)]


def _session_keys_message(job: str, sid: str, party: str, c_pk: bytes, s_pk: bytes) -> bytes:
    return context(_PROTO, "keys", job, sid, party, c_pk, s_pk)


def _round_survivors_message(job: str, sid: str, tag: str, r: int, survivors: Sequence[str]) -> bytes:
    return context(_PROTO, "survivors", job, sid, tag, str(r), *sorted(survivors))


def _self_info(job: str, sid: str, tag: str, r: int, party: str) -> bytes:
    return context(_PROTO, "self", job, sid, tag, str(r), party)


def _round_pair_info(job: str, sid: str, tag: str, r: int, a: str, b: str) -> bytes:
    lo, hi = sorted((a, b))
    return context(_PROTO, "pair", job, sid, tag, str(r), lo, hi)


def _parse_session_keys(party: str, entry: Any, tag: str, rounds: int) -> tuple[bytes, bytes]:
    if not isinstance(entry, dict):
        raise ProtocolError(f"secure aggregation: public keys of party {party!r} for {tag!r} are malformed")
    cp, sp = entry.get("c_pk"), entry.get("s_pk")
    if not (isinstance(cp, bytes) and isinstance(sp, bytes) and len(cp) == _KEY_BYTES
            and len(sp) == rounds * _KEY_BYTES):
        raise ProtocolError(f"secure aggregation: public keys of party {party!r} for {tag!r} are not one 32-byte and "
                            f"{rounds} per-round X25519 keys (is every party configured for the same rounds?)")
    return cp, sp
