"""Secure aggregation after Bonawitz et al. (CCS 2017): the coordinator learns only the sum.

:class:`SecureAggregation` implements :class:`~fedrisk.algorithms.horizontal.aggregation.Aggregation`
(``submit`` on each party, ``collect`` on the coordinator). Every call pair under a ``tag`` is one
self-contained round with fresh keys; all sub-messages use tags ``<tag>.sa.<step>``. For jobs
with many aggregations, :class:`~fedrisk.crypto.secagg_session.SessionSecureAggregation` deals the
keys and Shamir shares for a batch of rounds once and then needs three messages per party per
aggregation instead of seven (the horizontal tasks' default).

Message flow for one ``tag`` (``C`` = coordinator, ``P_i`` = party ``i``; ``U1 ⊇ U2 ⊇ U3 ⊇ U4``
are the parties still present after each step; parties are ordered by name)::

    0. P_i -> C    .sa.keys       c_pk_i, s_pk_i, sig_i                     public-parameter
                   fresh X25519 pairs: c_* encrypts shares, s_* derives pairwise masks
                   (sent by ``prepare`` if the algorithm calls it before local training);
                   sig_i = ECDSA_P256(party TLS key, job|tag|i|c_pk_i|s_pk_i) when configured
       C -> P_i    .sa.keylist    threshold t, {j: (c_pk_j, s_pk_j, sig_j)} for j in U1
                                                                            public-parameter
       P_i: verify every sig_j against j's certificate, check t, |U1| >= t
    1. P_i -> C    .sa.shares     {j: AEAD_{k_ij}(share_j(s_sk_i) | share_j(b_i))}   ciphertext
                   Shamir shares (threshold t, x = rank in U1) of the mask secret key s_sk_i
                   and of a fresh 32-byte self-mask seed b_i; k_ij = HKDF(X25519(c_sk_i, c_pk_j))
       C -> P_i    .sa.inbox      U2 and {j: ciphertext from j for i}       ciphertext
    2. P_i -> C    .sa.masked     y_i = enc(x_i) + PRG(b_i)
                                        + sum_{j in U2, i<j} PRG(s_ij) - sum_{j in U2, i>j} PRG(s_ij)
                                  (mod 2^64), s_ij = X25519(s_sk_i, s_pk_j)  masked
       C: parties silent for ``dropout_timeout`` are dropped: U3 = those whose y_i arrived
    3. C -> P_i    .sa.unmask     survivors U3, dropped U2 \\ U3            control
       (only when signing is configured: Bonawitz's consistency check)
       P_i -> C    .sa.confirm    ECDSA(job|tag|U3)                          public-parameter
       C -> P_i    .sa.confirmed  {j: signature} for j in U3                public-parameter
       P_i: refuse unless >= t valid signatures on the same U3
    4. P_i -> C    .sa.reveal     shares of s_sk_j for j dropped, of b_j for j in U3
                                                                            plaintext-by-design
       C: reconstruct from t of the U4 answers, subtract PRG(b_j) for j in U3 and the dangling
          pairwise masks between survivors and dropped parties; decode the sum.

What each participant learns: the coordinator learns the public keys, who dropped out at which
step, and ``sum_{i in U3} x_i`` — nothing about an individual ``x_i`` (each ``y_i`` is uniform in
Z/2^64 on its own). A party learns the other parties' public keys and names, Shamir shares
(below threshold: nothing), and U2 and U3; never the sum or another party's vector.
"""
from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from typing import Any, Mapping, Sequence

import numpy as np
from cryptography import x509
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.x509.oid import NameOID

from fedrisk.algorithms.horizontal.aggregation import AggregateResult, Aggregation
from fedrisk.crypto import ring64, shamir
from fedrisk.crypto.prg_mask import context, derive_key, mask
from fedrisk.errors import ConfigError, CryptoError, ProtocolError, TransportError
from fedrisk.transport.channel import Channel

__all__ = ["SecureAggregation", "default_threshold"]

_KEY_BYTES = 32
_SEED_BYTES = 32
_NONCE_BYTES = 12
_SHARE_PLAIN = 2 * shamir.SHARE_BYTES
_SHARE_CT = _NONCE_BYTES + _SHARE_PLAIN + 16
_PROTO = "fedrisk.secagg.v1"
DEFAULT_COLLUDERS = 1
log = logging.getLogger("fedrisk.secagg")


def default_threshold(n: int, colluders: int = DEFAULT_COLLUDERS) -> int:
    """Smallest safe threshold: ``t > (n + colluders) / 2`` (Bonawitz et al.), at least 2, at most ``n``.

    Why this bound. A deviating coordinator that colludes with ``colluders`` parties can split the
    other honest parties into those told "the victim survived" (they reveal the victim's self-mask
    seed ``b``) and those told "the victim dropped" (they reveal its mask key ``s_sk``). With ``h``
    honest parties besides the victim it collects ``colluders + 1 + h1`` shares of ``b`` and
    ``colluders + h2`` of ``s_sk``, ``h1 + h2 = h``; both reach ``t`` only if
    ``2t <= n + colluders``. The simplest form of the attack — telling the victim that only
    ``{victim, colluder}`` are alive — needs ``t <= colluders + 1``, which the bound also excludes.
    For ``n = 3`` and one colluder this gives ``t = 3``: no dropout tolerance; for ``n = 4`` it is 3
    (one dropout), for ``n = 5`` it is 4.
    """
    if n < 1 or colluders < 0:
        raise ConfigError(f"secure aggregation: need n >= 1 parties and colluders >= 0, got n={n}, colluders={colluders}")
    return min(n, max(2, (n + colluders) // 2 + 1))


class SecureAggregation(Aggregation):
    """Bonawitz-style secure aggregation: pairwise + self masks, Shamir-shared for dropouts.

    Parameters
    ----------
    threshold : int, optional
        Shares needed to reconstruct a party's secrets, and the minimum number of parties whose
        vectors must be in the sum. Default: :func:`default_threshold` of the number of parties
        and ``colluders`` (3 of 3, 3 of 4, 4 of 5 with one colluder). An explicit value below that
        is honoured — it buys dropout tolerance, e.g. 2 of 3 — but logged as a warning: it lets a
        deviating coordinator with ``colluders`` parties isolate one party's update.
    colluders : int
        Parties that may collude with a deviating coordinator while every other party's update
        stays hidden (default 1). Sets the default and the minimum accepted threshold.
    frac_bits : int
        Fractional bits of the fixed-point encoding in Z/2^64 (default 24). The sum must satisfy
        ``|sum| < 2^(63 - frac_bits)`` (≈ 5.5e11 for 24); each party checks the sufficient
        bound ``|x| <= 2^(63 - frac_bits) / |U2|`` per element and raises
        :class:`~fedrisk.errors.CryptoError` before anything could wrap.
    dropout_timeout : float
        Seconds the coordinator waits at each step after the first (shares, masked vectors,
        confirmations, reveals) before treating a silent party as dropped.
    key_timeout : float, optional
        Seconds the coordinator waits for the first step (public keys). Parties usually train
        locally before submitting, so this defaults to the channel's receive timeout.
    signing_key_pem : bytes, optional
        This party's own TLS private key (ECDSA P-256, PEM). When given, the party signs its
        public keys and (in step 3) the survivor set.
    peer_certs_pem : dict of str to bytes, optional
        Every party's certificate (PEM), by party name. When given, every public key and survivor
        set is verified; a bad or missing signature raises :class:`~fedrisk.errors.ProtocolError`
        naming the party. On the coordinator this refuses forged keys early.
    parties : sequence of str, optional
        Every party of the job that contributes to sums. A party then refuses a key list naming
        anyone else, and a threshold below the safe threshold for *all* of them: without it a malicious
        coordinator could send a victim a key list of just the victim and one colluder with
        ``t = 2`` and strip the victim's masks. Always set it in deployments.

    Notes
    -----
    Security model. Against an *honest-but-curious* coordinator (follows the protocol, tries to
    learn from what it sees) the coordinator learns only the sum over U3; colluding with fewer
    than ``t`` parties adds nothing beyond those parties' own inputs. Against a *malicious*
    coordinator, public-key signatures stop it from impersonating parties (forging key pairs to
    strip masks), and the signed consistency check stops it from telling some parties that
    ``j`` dropped and others that ``j`` survived to collect both of ``j``'s secrets. Without
    ``signing_key_pem``/``peer_certs_pem`` only the honest-but-curious guarantee holds. A
    malicious coordinator can still exclude parties (shrinking the sum to ``t`` inputs) and
    learn the sum of any set of at least ``t`` parties over several rounds. The default
    ``t > (n + colluders) / 2`` stops it from isolating one party's update by showing different
    survivor sets to different parties (see :func:`default_threshold`;
    ``tests/crypto/test_secure_aggregation_attacks.py`` runs the attack at n = 3, 4, 5); a lower
    explicit ``t`` trades that for dropout tolerance and is logged as a warning.

    What a dropout reveals. For a party dropped after sending its shares, the coordinator
    reconstructs its mask key ``s_sk`` — harmless, since its masked vector is either absent or
    still hidden by the self-mask ``b``, which is never revealed for a dropped party. A party
    that is merely late is treated the same way: its late vector is never unmasked. Parties
    refuse to reveal both kinds of share for the same party and never reveal when fewer than
    ``t`` survivors remain (a sum over fewer parties would say too much about each).

    Every ``tag`` uses fresh key pairs and seeds, so masks never repeat across rounds. Besides
    configuration the instance holds only key pairs advertised by :meth:`prepare` and not yet
    used, keyed by (party, job, tag), so one instance may serve several parties in-process
    (unless each party needs its own ``signing_key_pem``).
    """

    kind = "masked"

    def __init__(self, threshold: int | None = None, frac_bits: int = ring64.DEFAULT_FRAC_BITS,
                 dropout_timeout: float = 10.0, key_timeout: float | None = None,
                 signing_key_pem: bytes | None = None, peer_certs_pem: Mapping[str, bytes] | None = None,
                 parties: Sequence[str] | None = None, colluders: int = DEFAULT_COLLUDERS) -> None:
        if not isinstance(colluders, int) or colluders < 0:
            raise ConfigError(f"secure aggregation: colluders must be an integer >= 0, got {colluders!r}")
        self.threshold = threshold
        self.colluders = colluders
        self.parties = tuple(parties) if parties is not None else None
        self.frac_bits = frac_bits
        self.dropout_timeout = dropout_timeout
        self.key_timeout = key_timeout
        self.signing_key_pem = signing_key_pem
        self.peer_certs_pem = peer_certs_pem

    # -- authentication ------------------------------------------------------------------------
    def _signer(self) -> ec.EllipticCurvePrivateKey | None:
        if self.signing_key_pem is None:
            return None
        cached = self.__dict__.get("_signer_cache")
        if cached is None:
            try:
                cached = serialization.load_pem_private_key(self.signing_key_pem, password=None)
            except (ValueError, TypeError) as e:
                raise ConfigError(f"secure aggregation: signing_key_pem is not a readable unencrypted PEM private key ({e})") from e
            if not isinstance(cached, ec.EllipticCurvePrivateKey):
                raise ConfigError("secure aggregation: signing_key_pem must be an ECDSA (EC) private key, e.g. the party's P-256 TLS key")
            self.__dict__["_signer_cache"] = cached
        return cached

    def _verifier(self, party: str) -> ec.EllipticCurvePublicKey:
        cache = self.__dict__.setdefault("_verifier_cache", {})
        if party not in cache:
            pem = (self.peer_certs_pem or {}).get(party)
            if pem is None:
                raise ProtocolError(f"secure aggregation: no certificate for party {party!r} in peer_certs_pem; "
                                    f"add its certificate to verify its keys")
            try:
                cert = x509.load_pem_x509_certificate(pem)
            except ValueError as e:
                raise ConfigError(f"secure aggregation: certificate of party {party!r} is not valid PEM ({e})") from e
            cns = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
            if cns and party not in cns:
                raise ConfigError(f"secure aggregation: the certificate given for party {party!r} is issued to {cns[0]!r}")
            key = cert.public_key()
            if not isinstance(key, ec.EllipticCurvePublicKey):
                raise ConfigError(f"secure aggregation: certificate of party {party!r} does not hold an EC public key")
            cache[party] = key
        return cache[party]

    def _sign(self, msg: bytes) -> bytes:
        signer = self._signer()
        return b"" if signer is None else signer.sign(msg, ec.ECDSA(hashes.SHA256()))

    def _verify(self, party: str, msg: bytes, sig: Any, what: str) -> None:
        if not isinstance(sig, bytes) or not sig:
            raise ProtocolError(f"secure aggregation: party {party!r} sent no signature on its {what}")
        try:
            self._verifier(party).verify(sig, msg, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            raise ProtocolError(f"secure aggregation: the signature of party {party!r} on its {what} does not verify "
                                f"against its certificate; refusing (forged or tampered keys)") from None

    # -- party side ------------------------------------------------------------------------------
    def _pending_lock(self) -> threading.Lock:
        self.__dict__.setdefault("_pending", {})
        return self.__dict__.setdefault("_lock", threading.Lock())

    def prepare(self, channel: Channel, coordinator: str, tag: str) -> None:
        """Party side, optional: advertise this round's fresh public keys now (step 0).

        An algorithm may call this before its local training so that key generation and the
        key-list relay overlap with training instead of adding a round trip after it; ``submit``
        then continues from step 1. Calling it twice for a ``tag``, or not at all, is fine.

        Notes
        -----
        The key pairs are created here and kept in memory until ``submit`` for the same ``tag``
        consumes them; they depend on nothing but fresh randomness, so advertising early reveals
        nothing about the vector.
        """
        me, job = channel.me, channel.job
        with self._pending_lock():
            if (me, job, tag) in self.__dict__["_pending"]:
                return
            c_sk, s_sk = X25519PrivateKey.generate(), X25519PrivateKey.generate()
            self.__dict__["_pending"][(me, job, tag)] = (c_sk, s_sk)
        c_pk, s_pk = _raw_pub(c_sk), _raw_pub(s_sk)
        sig = self._sign(_keys_message(job, tag, me, c_pk, s_pk))
        channel.send(coordinator, f"{tag}.sa.keys", {"c_pk": c_pk, "s_pk": s_pk, "sig": sig}, kind="public-parameter")

    def submit(self, channel: Channel, coordinator: str, tag: str, vector: np.ndarray) -> None:
        """Party side: add ``vector`` to the masked sum under ``tag`` (steps 0–4 above).

        Returns once this party has revealed its shares, or earlier if the coordinator reports it
        was excluded (it dropped out or was late): its vector is then simply not in the sum.
        """
        me, job = channel.me, channel.job
        x = np.asarray(vector, dtype=np.float64)
        if x.ndim != 1:
            raise CryptoError(f"{me}: secure aggregation sums 1-D vectors; got shape {x.shape}")
        if not np.all(np.isfinite(x)):
            raise CryptoError(f"{me}: the vector for {tag!r} holds NaN or infinity; nothing was sent")

        # step 0: advertise fresh keys (unless prepare() already did)
        self.prepare(channel, coordinator, tag)
        with self._pending_lock():
            c_sk, s_sk = self.__dict__["_pending"].pop((me, job, tag))
        c_pk, s_pk = _raw_pub(c_sk), _raw_pub(s_sk)
        msg = channel.recv(coordinator, f"{tag}.sa.keylist")
        if isinstance(msg, dict) and msg.get("abort"):
            raise ProtocolError(f"{me}: the coordinator aborted aggregation {tag!r}: {msg['abort']}")
        if not isinstance(msg, dict) or msg.get("excluded"):
            return
        keys, t = self._check_keylist(channel, tag, msg, c_pk, s_pk)
        members = sorted(keys)
        xs = {p: k + 1 for k, p in enumerate(members)}

        # step 1: Shamir-share s_sk and b, encrypt each pair's shares under the c agreement
        b_seed = secrets.token_bytes(_SEED_BYTES)
        s_shares = shamir.split_bytes(_raw_priv(s_sk), t, list(xs.values()))
        b_shares = shamir.split_bytes(b_seed, t, list(xs.values()))
        share_keys = {j: _share_key(c_sk, keys[j][0], job, tag, me, j) for j in members if j != me}
        out = {}
        for j in members:
            if j != me:
                nonce = os.urandom(_NONCE_BYTES)
                plain = s_shares[xs[j]] + b_shares[xs[j]]
                out[j] = nonce + ChaCha20Poly1305(share_keys[j]).encrypt(nonce, plain, context(job, tag, me, j))
        channel.send(coordinator, f"{tag}.sa.shares", out, kind="ciphertext")
        inbox = channel.recv(coordinator, f"{tag}.sa.inbox")
        u2 = self._check_members(me, tag, inbox, "members", set(members), t, "sent their shares")
        if u2 is None:
            return
        held = {me: (s_shares[xs[me]], b_shares[xs[me]])}
        got = inbox.get("shares")
        if not isinstance(got, dict) or set(got) != set(u2) - {me}:
            raise ProtocolError(f"{me}: the coordinator's share relay for {tag!r} does not hold one share from each of {u2}")
        for j, ct in got.items():
            if not isinstance(ct, bytes) or len(ct) != _SHARE_CT:
                raise ProtocolError(f"{me}: the encrypted share from party {j!r} under {tag!r} is malformed")
            try:
                plain = ChaCha20Poly1305(share_keys[j]).decrypt(ct[:_NONCE_BYTES], ct[_NONCE_BYTES:], context(job, tag, j, me))
            except InvalidTag:
                raise ProtocolError(f"{me}: the encrypted share from party {j!r} under {tag!r} does not decrypt "
                                    f"(tampered in transit or not meant for {me!r})") from None
            held[j] = (plain[:shamir.SHARE_BYTES], plain[shamir.SHARE_BYTES:])

        # step 2: masked input
        self._send_masked(channel, coordinator, tag, self._mask_vector(job, tag, me, x, u2, s_sk, keys, b_seed))

        # step 3: who survived; optionally the signed consistency check
        req = channel.recv(coordinator, f"{tag}.sa.unmask")
        survivors = self._check_members(me, tag, req, "survivors", set(u2), t, "sent their masked vectors",
                                        need_me=False)
        dropped = req.get("dropped") if isinstance(req, dict) else None
        if not isinstance(dropped, list) or not all(isinstance(d, str) for d in dropped) \
                or set(dropped) & set(survivors) or set(dropped) | set(survivors) != set(u2):
            raise ProtocolError(f"{me}: the coordinator's dropout list for {tag!r} is inconsistent "
                                f"(dropped {dropped}, survivors {survivors}, expected a split of {u2}); refusing to reveal shares")
        if me not in survivors:
            return
        if self.signing_key_pem is not None or self.peer_certs_pem is not None:
            self._consistency_check(channel, coordinator, tag, survivors, t)

        # step 4: reveal shares — for each party, one kind only
        reveal = {"s": {j: held[j][0] for j in dropped}, "b": {j: held[j][1] for j in survivors}}
        channel.send(coordinator, f"{tag}.sa.reveal", reveal, kind="plaintext-by-design")

    def _send_masked(self, channel: Channel, coordinator: str, tag: str, y: np.ndarray) -> None:
        # a separate hook so tests can simulate a party that dies after the share step
        channel.send(coordinator, f"{tag}.sa.masked", y, kind="masked")

    def _mask_vector(self, job: str, tag: str, me: str, x: np.ndarray, u2: Sequence[str], s_sk: X25519PrivateKey,
                     keys: Mapping[str, tuple[bytes, bytes]], b_seed: bytes) -> np.ndarray:
        try:
            y = ring64.encode(x, self.frac_bits, n_summands=len(u2))
        except CryptoError as e:
            raise CryptoError(f"{me}: {e}") from None
        n = len(y)
        y = y + mask(b_seed, context("self", job, tag, me), n)
        for j in u2:
            if j == me:
                continue
            m = mask(s_sk.exchange(X25519PublicKey.from_public_bytes(keys[j][1])), _pair_info(job, tag, me, j), n)
            if me < j:
                y += m
            else:
                y -= m
        return y

    def _check_keylist(self, channel: Channel, tag: str, msg: dict, c_pk: bytes, s_pk: bytes
                       ) -> tuple[dict[str, tuple[bytes, bytes]], int]:
        me, job = channel.me, channel.job
        raw = msg.get("keys")
        if not isinstance(raw, dict):
            raise ProtocolError(f"{me}: the coordinator's key list for {tag!r} is malformed")
        keys = {p: _parse_keys(p, e, tag) for p, e in raw.items()}
        if self.parties is not None and not set(keys) <= set(self.parties):
            raise ProtocolError(f"{me}: the coordinator's key list for {tag!r} names parties outside the job: "
                                f"{sorted(set(keys) - set(self.parties))}; refusing")
        # the bound is over every party of the job, not over the list the coordinator chose to send
        n_ref = len(self.parties) if self.parties is not None else len(keys)
        if keys.get(me) != (c_pk, s_pk):
            raise ProtocolError(f"{me}: the coordinator's key list for {tag!r} does not carry this party's own public keys "
                                f"unchanged; refusing (possible key substitution)")
        if len({k for pair in keys.values() for k in pair}) != 2 * len(keys):
            raise ProtocolError(f"{me}: the key list for {tag!r} repeats a public key; refusing")
        if self.peer_certs_pem is not None:
            for p, (cp, sp) in keys.items():
                if p != me:
                    self._verify(p, _keys_message(job, tag, p, cp, sp), raw[p].get("sig"), f"public keys for {tag!r}")
        t = msg.get("threshold")
        if not isinstance(t, int) or isinstance(t, bool):
            raise ProtocolError(f"{me}: the coordinator sent no threshold for {tag!r}")
        safe = default_threshold(n_ref, self.colluders)
        if self.threshold is not None:
            if t != self.threshold:
                raise ProtocolError(f"{me}: the coordinator uses threshold {t} for {tag!r}, this party is configured "
                                    f"for {self.threshold}; set the same threshold everywhere")
            _warn_if_unsafe(t, n_ref, self.colluders, me)
        elif t < safe:
            raise ProtocolError(f"{me}: the coordinator's threshold {t} for {tag!r} is below the safe threshold "
                                f"{safe} for {n_ref} parties and {self.colluders} colluder(s) (t > (n + colluders)/2); "
                                f"refusing")
        if len(keys) < max(t, 2):
            raise ProtocolError(f"{me}: only {len(keys)} parties advertised keys for {tag!r}, fewer than the "
                                f"threshold {max(t, 2)}")
        return keys, t

    @staticmethod
    def _check_members(me: str, tag: str, msg: Any, field: str, allowed: set, t: int, what: str,
                       need_me: bool = True) -> list[str] | None:
        group = msg.get(field) if isinstance(msg, dict) else None
        if not isinstance(group, list) or not all(isinstance(p, str) for p in group) or not set(group) <= allowed \
                or len(set(group)) != len(group):
            raise ProtocolError(f"{me}: the coordinator's list of parties that {what} for {tag!r} is malformed")
        if len(group) < t:
            raise ProtocolError(f"{me}: only {len(group)} parties {what} for {tag!r}, fewer than the threshold {t}; "
                                f"aborting this aggregation without revealing anything")
        if need_me and me not in group:
            return None
        return sorted(group)

    def _consistency_check(self, channel: Channel, coordinator: str, tag: str, survivors: list[str], t: int,
                           msg: bytes | None = None) -> None:
        """Bonawitz's check: sign the survivor list ``msg``, refuse unless >= ``t`` valid signatures on it."""
        me = channel.me
        msg = _survivors_message(channel.job, tag, survivors) if msg is None else msg
        channel.send(coordinator, f"{tag}.sa.confirm", {"sig": self._sign(msg)}, kind="public-parameter")
        sigs = channel.recv(coordinator, f"{tag}.sa.confirmed")
        if not isinstance(sigs, dict) or not set(sigs) <= set(survivors):
            raise ProtocolError(f"{me}: the coordinator's survivor confirmations for {tag!r} are malformed")
        if self.peer_certs_pem is not None:
            for p, sig in sigs.items():
                self._verify(p, msg, sig, f"survivor list for {tag!r}")
        if len(sigs) < t:
            raise ProtocolError(f"{me}: only {len(sigs)} parties confirmed the survivor list for {tag!r}, fewer than "
                                f"the threshold {t}; refusing to reveal shares")

    # -- coordinator side --------------------------------------------------------------------
    def collect(self, channel: Channel, parties: Sequence[str], tag: str, length: int) -> AggregateResult:
        """Coordinator side: run steps 0–4 and return the unmasked sum over the survivors.

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
        t = self.threshold if self.threshold is not None else default_threshold(len(parties), self.colluders)
        if not 2 <= t <= len(parties):
            raise ConfigError(f"secure aggregation threshold {t} must lie in 2..{len(parties)} (the number of parties)")
        if self.threshold is not None:
            _warn_if_unsafe(t, len(parties), self.colluders, "coordinator")

        # step 0. A party that dropped out of an earlier round is most likely gone for good: it
        # gets the short dropout timeout, not the long key timeout, so one dead bank does not
        # stall every later round (a live one that was merely late is back in as soon as it answers)
        gone = self.__dict__.setdefault("_gone", set())
        raw = _gather(channel, [p for p in parties if p not in gone], f"{tag}.sa.keys",
                      channel.recv_timeout if self.key_timeout is None else self.key_timeout)
        raw.update(_gather(channel, [p for p in parties if p in gone], f"{tag}.sa.keys", self.dropout_timeout))
        gone.difference_update(raw)
        gone.update(p for p in parties if p not in raw)
        keys = {p: _parse_keys(p, m, tag) for p, m in raw.items()}
        if self.peer_certs_pem is not None:
            try:
                for p, (cp, sp) in keys.items():
                    self._verify(p, _keys_message(job, tag, p, cp, sp), raw[p].get("sig"), f"public keys for {tag!r}")
            except ProtocolError as e:
                _notify(channel, parties, f"{tag}.sa.keylist", {"abort": str(e)})
                raise
        u1 = sorted(keys)
        keylist = {"threshold": t, "keys": {p: raw[p] for p in u1}}
        for p in u1:
            channel.send(p, f"{tag}.sa.keylist", keylist, kind="public-parameter")
        _notify(channel, [p for p in parties if p not in keys], f"{tag}.sa.keylist", {"excluded": True})
        _require(len(u1), t, tag, "advertised keys", parties, u1)

        # step 1
        deadline = time.monotonic() + self.dropout_timeout
        shares = _gather(channel, u1, f"{tag}.sa.shares", deadline=deadline)
        for p, m in shares.items():
            if not isinstance(m, dict) or set(m) != set(u1) - {p} or \
                    not all(isinstance(c, bytes) and len(c) == _SHARE_CT for c in m.values()):
                raise ProtocolError(f"secure aggregation: party {p!r} sent malformed encrypted shares for {tag!r}")
        u2 = sorted(shares)
        for p in u2:
            inbox = {"members": u2, "shares": {j: shares[j][p] for j in u2 if j != p}}
            channel.send(p, f"{tag}.sa.inbox", inbox, kind="ciphertext")
        _notify(channel, [p for p in u1 if p not in shares], f"{tag}.sa.inbox", {"members": u2, "shares": {}})
        _require(len(u2), t, tag, "sent their encrypted shares", u1, u2)

        # step 2
        deadline = time.monotonic() + self.dropout_timeout
        masked = _gather(channel, u2, f"{tag}.sa.masked", deadline=deadline)
        for p, y in masked.items():
            if not isinstance(y, np.ndarray) or y.dtype != np.uint64 or y.shape != (length,):
                raise ProtocolError(f"secure aggregation: party {p!r} sent a masked vector of "
                                    f"{getattr(y, 'dtype', type(y).__name__)} {getattr(y, 'shape', '')} under {tag!r}; "
                                    f"expected uint64 ({length},)")
        u3 = sorted(masked)
        dropped = [p for p in u2 if p not in masked]
        gone.update(dropped)
        req = {"survivors": u3, "dropped": dropped}
        for p in u3:
            channel.send(p, f"{tag}.sa.unmask", req, kind="control")
        _notify(channel, dropped, f"{tag}.sa.unmask", req)
        _require(len(u3), t, tag, "sent their masked vectors", u2, u3)

        # step 3 (signed mode)
        if self.signing_key_pem is not None or self.peer_certs_pem is not None:
            deadline = time.monotonic() + self.dropout_timeout
            conf = _gather(channel, u3, f"{tag}.sa.confirm", deadline=deadline)
            sigs = {p: m.get("sig") if isinstance(m, dict) else None for p, m in conf.items()}
            if self.peer_certs_pem is not None:
                msg = _survivors_message(job, tag, u3)
                for p, sig in sigs.items():
                    self._verify(p, msg, sig, f"survivor list for {tag!r}")
            for p in sorted(conf):
                channel.send(p, f"{tag}.sa.confirmed", sigs, kind="public-parameter")
            _require(len(conf), t, tag, "confirmed the survivor list", u3, sorted(conf))

        # step 4
        deadline = time.monotonic() + self.dropout_timeout
        reveals = _gather(channel, u3, f"{tag}.sa.reveal", deadline=deadline)
        for p, m in reveals.items():
            ok = isinstance(m, dict) and isinstance(m.get("s"), dict) and isinstance(m.get("b"), dict) \
                and set(m["s"]) == set(dropped) and set(m["b"]) == set(u3) \
                and all(isinstance(v, bytes) for v in (*m["s"].values(), *m["b"].values()))
            if not ok:
                raise ProtocolError(f"secure aggregation: party {p!r} revealed malformed shares for {tag!r}")
        _require(len(reveals), t, tag, "revealed their shares", u3, sorted(reveals))
        xs = {p: k + 1 for k, p in enumerate(u1)}

        def recover(kind: str, of: str) -> bytes:
            try:
                return shamir.reconstruct_bytes({xs[p]: reveals[p][kind][of] for p in reveals}, t, _KEY_BYTES)
            except CryptoError as e:
                raise ProtocolError(f"secure aggregation: cannot reconstruct the secret of party {of!r} for {tag!r}: {e}") from None

        total = np.zeros(length, dtype=np.uint64)
        for p in u3:
            total += masked[p]
            total -= mask(recover("b", p), context("self", job, tag, p), length)
        for j in dropped:
            s_sk_j = X25519PrivateKey.from_private_bytes(recover("s", j))
            if _raw_pub(s_sk_j) != keys[j][1]:
                raise ProtocolError(f"secure aggregation: the reconstructed mask key of dropped party {j!r} does not match "
                                    f"its public key for {tag!r}; a party revealed a wrong share")
            for i in u3:
                m = mask(s_sk_j.exchange(X25519PublicKey.from_public_bytes(keys[i][1])), _pair_info(job, tag, i, j), length)
                # undo what survivor i added for the pair (i, j)
                if i < j:
                    total -= m
                else:
                    total += m
        return AggregateResult(ring64.decode(total, self.frac_bits), u3)


# -- helpers ----------------------------------------------------------------------------------
def _raw_pub(sk: X25519PrivateKey) -> bytes:
    return sk.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _raw_priv(sk: X25519PrivateKey) -> bytes:
    return sk.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())


def _keys_message(job: str, tag: str, party: str, c_pk: bytes, s_pk: bytes) -> bytes:
    return context(_PROTO, "keys", job, tag, party, c_pk, s_pk)


def _survivors_message(job: str, tag: str, survivors: Sequence[str]) -> bytes:
    return context(_PROTO, "survivors", job, tag, *sorted(survivors))


def _pair_info(job: str, tag: str, a: str, b: str) -> bytes:
    lo, hi = sorted((a, b))
    return context("pair", job, tag, lo, hi)


def _share_key(c_sk: X25519PrivateKey, peer_c_pk: bytes, job: str, tag: str, a: str, b: str) -> bytes:
    lo, hi = sorted((a, b))
    return derive_key(c_sk.exchange(X25519PublicKey.from_public_bytes(peer_c_pk)), context("share", job, tag, lo, hi))


def _parse_keys(party: str, entry: Any, tag: str) -> tuple[bytes, bytes]:
    if not isinstance(entry, dict):
        raise ProtocolError(f"secure aggregation: public keys of party {party!r} for {tag!r} are malformed")
    cp, sp = entry.get("c_pk"), entry.get("s_pk")
    if not (isinstance(cp, bytes) and isinstance(sp, bytes) and len(cp) == len(sp) == _KEY_BYTES):
        raise ProtocolError(f"secure aggregation: public keys of party {party!r} for {tag!r} are not two 32-byte X25519 keys")
    return cp, sp


def _gather(channel: Channel, senders: Sequence[str], tag: str, timeout: float | None = None,
            deadline: float | None = None) -> dict[str, Any]:
    """Receive ``tag`` from each sender until one shared deadline; silent senders are left out."""
    if deadline is None:
        deadline = time.monotonic() + float(timeout if timeout is not None else channel.recv_timeout)
    out = {}
    for p in senders:
        try:
            out[p] = channel.recv(p, tag, timeout=max(0.0, deadline - time.monotonic()))
        except TransportError:
            if channel.mailbox.failure is not None:
                raise  # the job was aborted by a peer: that, not a dropout, is what to report
            continue
    return out


def _notify(channel: Channel, to: Sequence[str], tag: str, obj: Any) -> None:
    """Best-effort notice to parties that fell out of the round, so they stop waiting.

    Sent from a background thread: a party that died cannot be reached, and retrying it must not
    hold up the parties that are still in the round.
    """
    def send_all() -> None:
        for p in to:
            try:
                channel.send(p, tag, obj, kind="control")
            except Exception:  # noqa: BLE001 - best effort by design; the party may be gone
                pass

    if to:
        threading.Thread(target=send_all, name="secagg-notify", daemon=True).start()


def _warn_if_unsafe(t: int, n: int, colluders: int, who: str) -> None:
    """Log once per call that an explicitly chosen threshold trades privacy for dropout tolerance."""
    safe = default_threshold(n, colluders)
    if t < safe:
        log.warning("%s: secure aggregation threshold %d of %d is below the safe %d for %d colluder(s): a deviating "
                    "coordinator with %d colluding party(ies) can isolate one party's update. Chosen explicitly for "
                    "dropout tolerance; remove the setting to use %d", who, t, n, safe, colluders, colluders, safe)


def _require(have: int, t: int, tag: str, what: str, expected: Sequence[str], present: Sequence[str]) -> None:
    if have < t:
        missing = [p for p in expected if p not in present]
        raise ProtocolError(f"secure aggregation for {tag!r}: only {have} parties {what}, fewer than the threshold {t} "
                            f"(missing: {missing}); the sum cannot be recovered safely. Restart the round with "
                            f"more parties online or lower the threshold")
