"""The bureau's offline steps of unbalanced PSI, from the job spec: ``fedrisk psi key`` and ``fedrisk psi encode``.

Both run on the key holder's host only and send nothing: the key and the private index never
leave ``[parties.NAME] psi_store``; ``encoded.bin`` reaches the lender inside its next unbalanced
job (:mod:`fedrisk.algorithms.vertical.unbalanced_psi`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from fedrisk.algorithms.vertical import ub_store
from fedrisk.errors import ConfigError
from fedrisk.runtime.spec import JobSpec, load_spec

__all__ = ["store_of", "make_key", "encode_party"]


def store_of(spec: JobSpec, party: str) -> Path:
    """The party's ``psi_store`` directory (resolved against the spec's folder), checked to be set."""
    if party not in spec.parties:
        raise ConfigError(f"no party {party!r} in the job spec; parties are {sorted(spec.parties)}")
    path = spec.resolve(spec.parties[party].psi_store)
    if path is None:
        raise ConfigError(f"party {party!r}: set [parties.{party}] psi_store = 'DIR' in the job spec (where its OPRF "
                          "key and encoded set are kept)")
    return path


def _key_holder(spec: JobSpec, party: str) -> None:
    if spec.psi.protocol != "unbalanced" or spec.psi.key_holder != party:
        raise ConfigError(f"party {party!r} is not the job's key holder: set [psi] protocol = 'unbalanced' and "
                          f"key_holder = {party!r} in the job spec")


def make_key(spec_path: Path, party: str, *, rotate: bool = False) -> ub_store.OprfKey:
    """Create the party's first OPRF key, or with ``rotate`` a new epoch (old encoded files deleted)."""
    spec = load_spec(spec_path)
    _key_holder(spec, party)
    store = store_of(spec, party)
    return ub_store.rotate_key(store, party) if rotate else ub_store.create_key(store, party)


def encode_party(spec_path: Path, party: str, *, rows: int = 262144) -> dict[str, Any]:
    """Encode the party's id column (its ``data`` file, streamed in chunks of ``rows``) under its current key."""
    spec = load_spec(spec_path)
    _key_holder(spec, party)
    p = spec.parties[party]
    data = spec.data_path(party)
    if data is None:
        raise ConfigError(f"party {party!r}: no data file in the job spec; set [parties.{party}] data = '...'")
    return ub_store.encode_id_file(store_of(spec, party), party, data, p.id, sep=p.read_options()["sep"], rows=rows,
                                   na_values=p.na_values)
