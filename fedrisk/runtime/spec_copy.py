"""The job spec a participant keeps in its run directory (``RUN_DIR/job.toml``).

``fedrisk party`` writes the spec it ran, so ``fedrisk predict RUN_DIR/model.json NEW.csv
--no-spawn`` works on that host later without copying files by hand. What it writes is this
party's view of the job, resolved so it no longer depends on where the original spec lived:

* relative paths this party reads (its own ``data``, ``security.certs``, pinned ``ca`` files, the
  evaluation ``test`` file if it is the evaluation holder) become absolute;
* other parties' ``data`` paths are left out: they name files on other hosts (a path is a
  detail of another institution's machine this party has no use for), and the evaluation ``test``
  file is left out unless this party reads it;
* ``evaluation.weight`` (a column of the evaluating party's own file) is kept by that party only;
* everything else (addresses, ids, labels, ``[task]``, ``[evaluation]`` rules, ``[security]``,
  ``[psi]``) is kept: every participant already holds it, the handshake checks it.

A ``fedrisk simulate`` run shares one run directory between all its participants and keeps the
full spec there itself (its feature holders' inference processes read their data paths from
it), so participants started by ``simulate`` leave ``job.toml`` alone (:data:`KEPT_BY_ENV`).
TOML is written by :func:`dumps` (a small emitter for the spec's shapes: tables, scalars, arrays,
inline tables), since the standard library only reads TOML.
"""
from __future__ import annotations

import json
import math
import os
import tomllib
from pathlib import Path
from typing import Any

from fedrisk.errors import ConfigError

__all__ = ["party_view", "write_party_spec", "dumps", "KEPT_BY_ENV"]

#: set by ``simulate`` for its participants: the run directory's job.toml is the simulation's
KEPT_BY_ENV = "FEDRISK_SPEC_KEPT_BY"


def _abs(base: Path, p: Any) -> str:
    q = Path(str(p)).expanduser()
    return str(q if q.is_absolute() else (base / q).resolve())


def party_view(raw: dict[str, Any], base: Path, me: str, evaluation_holder: str) -> dict[str, Any]:
    """``raw`` (the parsed spec) as participant ``me`` keeps it: own paths absolute, others' data left out."""
    doc = json.loads(json.dumps(raw))  # a deep copy of plain TOML values
    for name, table in (doc.get("parties") or {}).items():
        if name == me:
            if "data" in table:
                table["data"] = _abs(base, table["data"])
        else:
            table.pop("data", None)
        if "ca" in table:
            table["ca"] = _abs(base, table["ca"])
    coord = doc.get("coordinator")
    if isinstance(coord, dict) and "ca" in coord:
        coord["ca"] = _abs(base, coord["ca"])
    ev = doc.get("evaluation")
    if isinstance(ev, dict) and "test" in ev:
        if me == evaluation_holder:
            ev["test"] = _abs(base, ev["test"])
        else:  # (with the file's dialect, which only its holder reads it in)
            for key in ("test", "sep", "decimal", "na_values"):
                ev.pop(key, None)
    if isinstance(ev, dict) and "weight" in ev:
        # a column of the evaluating party's own file (the label holder's data, or the test file): its business only
        labels = [n for n, t in (doc.get("parties") or {}).items() if isinstance(t, dict) and t.get("label")]
        vertical = str((doc.get("task") or {}).get("kind", "")).startswith("vertical")
        if me != (labels[0] if vertical and labels else evaluation_holder):
            ev.pop("weight")
    sec = doc.get("security")
    if isinstance(sec, dict) and "certs" in sec:
        sec["certs"] = _abs(base, sec["certs"])
    return doc


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)  # a JSON string is a valid TOML basic string
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_key(k)} = {_value(x)}" for k, x in v.items()) + "}"
    raise ConfigError(f"cannot write {type(v).__name__} values into a job spec")


def _key(k: str) -> str:
    return k if k and all(c.isalnum() or c in "_-" for c in k) else json.dumps(k)


def dumps(doc: dict[str, Any]) -> str:
    """TOML text for a spec document (top-level tables, nested tables such as ``[parties.x]``)."""
    lines: list[str] = []

    def table(path: list[str], t: dict[str, Any]) -> None:
        scalars = {k: v for k, v in t.items() if not _is_table(k, v, path)}
        subs = {k: v for k, v in t.items() if _is_table(k, v, path)}
        if path and (scalars or not subs):
            lines.append("")
            lines.append("[" + ".".join(_key(p) for p in path) + "]")
        for k, v in scalars.items():
            lines.append(f"{_key(k)} = {_value(v)}")
        for k, v in subs.items():
            table([*path, k], v)

    table([], doc)
    return "\n".join(lines).lstrip("\n") + "\n"


def _is_table(key: str, v: Any, path: list[str]) -> bool:
    # a dict is a [table] at the top and under [parties]; deeper (positive = {bad = 1},
    # monotone = {x = 1}) it stays an inline table, as users write it
    return isinstance(v, dict) and (not path or path == ["parties"])


def write_party_spec(spec_file: Path, out: Path, me: str, evaluation_holder: str) -> Path:
    """Write participant ``me``'s view of ``spec_file`` to ``out/job.toml`` (atomically)."""
    target = out / "job.toml"
    try:
        raw = tomllib.loads(spec_file.read_text(encoding="utf-8"))
        text = dumps(party_view(raw, spec_file.resolve().parent, me, evaluation_holder))
        tmp = out / f".job.toml.{os.getpid()}.tmp"
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(target)
    except OSError as e:
        raise ConfigError(f"cannot write the job spec into the run directory {out}: {e.strerror}") from None
    return target
