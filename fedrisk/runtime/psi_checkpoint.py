"""PSI alignment that a resumed vertical job does not redo: ``RUN_DIR/checkpoints/<party>-psi.json``.

Every vertical task starts with ECDH-PSI, the longest step on big files. Each party writes what
the alignment gave it (its row positions in the common order) next to a fingerprint of its input
(the job's PSI salt and this party's own ids, hashed). With ``--resume`` every party checks its
checkpoint against its current file, and the parties agree before skipping PSI:

    each feature holder -> label holder : psi.resume  {"digest": hex or None}   (control)
    label holder -> each feature holder : psi.resume  {"use": bool}             (control)

``digest`` is SHA-256 over the salt and the aligned ids in the common order; every party holds
those ids, so equal digests mean the same intersection in the same order, and a digest tells a
partner nothing it does not already know. PSI is skipped only when every party has a checkpoint
that matches its own data and all digests agree; otherwise every party aligns again (and says
why in its log). These two messages are sent only by runs started with ``--resume``; the start-up
handshake refuses a job whose participants disagree on it.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from fedrisk.algorithms.vertical.alignment import Alignment, align_parties, alignment_salt
from fedrisk.errors import DataError, ProtocolError
from fedrisk.runtime.context import write_json

__all__ = ["aligned_rows", "FORMAT"]

FORMAT = "fedrisk.checkpoint.psi"
_TAG = "psi.resume"


def _fingerprint(salt: str, ids: Sequence[Any]) -> str:
    from fedrisk.crypto.psi import normalize_ids

    h = hashlib.sha256(salt.encode("utf-8") + b"\x00")
    for v in normalize_ids(ids):
        h.update(v.encode("utf-8") + b"\x00")
    return h.hexdigest()


def _path(ctx: Any) -> Path:
    return ctx.out / "checkpoints" / f"{ctx.name}-psi.json"


def _load(ctx: Any, ids: Sequence[Any], salt: str, peers: list[str]) -> tuple[Alignment | None, str | None, str]:
    """(alignment, digest, why not) from this party's checkpoint, if it matches its data."""
    import json

    path = _path(ctx)
    if not path.is_file():
        return None, None, "no PSI checkpoint"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, None, f"PSI checkpoint {path} is unreadable"
    if doc.get("format") != FORMAT or doc.get("version") != 1 or doc.get("job") != ctx.spec.job_id:
        return None, None, f"{path} is not a PSI checkpoint of job {ctx.spec.job_id!r}"
    if doc.get("salt") != salt or doc.get("peers") != peers or doc.get("fingerprint") != _fingerprint(salt, ids):
        return None, None, "the PSI checkpoint was made from other data or other parties"
    idx = np.asarray(doc["indices"], dtype=np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= len(ids)):
        return None, None, "the PSI checkpoint does not fit this party's rows"
    al = Alignment(idx, int(doc["size"]), len(ids), {k: int(v) for k, v in doc.get("peer_sizes", {}).items()}, 0.0)
    return al, doc.get("aligned_digest"), ""


def _digest(salt: str, ids: Sequence[Any], al: Alignment) -> str:
    return _fingerprint(salt + ":aligned", [ids[i] for i in al.indices])


def aligned_rows(ctx: Any, ids: Sequence[Any]) -> Alignment:
    """This party's PSI alignment: from the checkpoint when every party can resume it, else computed.

    Parameters
    ----------
    ctx : PartyContext
        This party (spec, channel, run directory, ``resume`` flag, log).
    ids : sequence
        This party's ids, one per row of its file.
    """
    from fedrisk.tasks.vertical_roles import roles

    spec = ctx.spec
    lh, hosts = roles(spec)
    salt = alignment_salt(spec.job_id)
    peers = sorted([lh, *hosts])
    ctx.phase("PSI alignment")
    if ctx.resume:
        al, digest, why = _load(ctx, ids, salt, peers)
        if ctx.name == lh:
            theirs = {h: ctx.channel.recv(h, _TAG) for h in hosts}
            bad = [h for h, m in theirs.items() if not isinstance(m, dict) or m.get("digest") != digest]
            use = al is not None and not bad
            ctx.channel.broadcast(hosts, _TAG, {"use": use}, kind="control")
            if not use:
                why = why or f"{', '.join(map(repr, bad))} cannot resume the same PSI result"
        else:
            ctx.channel.send(lh, _TAG, {"digest": digest}, kind="control")
            answer = ctx.channel.recv(lh, _TAG)
            if not isinstance(answer, dict) or "use" not in answer:
                raise ProtocolError(f"{lh!r} sent a malformed PSI resume answer")
            use = bool(answer["use"]) and al is not None
            if not use:
                why = why or "another party cannot resume the same PSI result"
        if use:
            ctx.log.info("PSI alignment resumed from %s: %d of this party's %d rows", _path(ctx), al.size, al.own_rows)
            return _enough(ctx, al)
        ctx.log.info("resume: aligning again (%s)", why)
    from fedrisk.algorithms.vertical.unbalanced_psi import UbSettings

    al = align_parties(ctx.channel, lh, hosts, ids, salt=salt, log=ctx.log, protocol=spec.psi.protocol,
                       memory_mb=spec.psi.memory_mb, spill_dir=ctx.out / "tmp",
                       unbalanced=UbSettings.from_spec(spec, ctx.name))
    write_json(_path(ctx), {"format": FORMAT, "version": 1, "job": spec.job_id, "salt": salt, "peers": peers,
                            "fingerprint": _fingerprint(salt, ids), "aligned_digest": _digest(salt, ids, al),
                            "indices": al.indices, "size": al.size, "peer_sizes": al.peer_sizes})
    return _enough(ctx, al)


def _enough(ctx: Any, al: Alignment) -> Alignment:
    """Refuse an intersection below ``[psi] min_intersection`` (every party sees the same size, so all stop)."""
    need = ctx.spec.psi.min_intersection
    if al.size < need:
        raise DataError(f"party {ctx.name!r}: the PSI intersection holds only {al.size} rows (this party brought "
                        f"{al.own_rows}); training needs at least {need} (psi.min_intersection). Check that the parties "
                        "use the same id column and write ids alike ('00123' and '123' do not match); this party's "
                        "log describes its id formats")
    return al
