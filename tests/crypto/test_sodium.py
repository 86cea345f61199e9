"""fedrisk.crypto.sodium: importing libsodium leaves nothing in the temporary folder."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

_SCRIPT = """
{imports}
# the loaded library still works once its file is gone: a ristretto255 round trip
p = rbcl.crypto_core_ristretto255_from_hash(bytes(range(64)))
k = rbcl.crypto_core_ristretto255_scalar_random()
q = rbcl.crypto_scalarmult_ristretto255(k, p)
assert rbcl.crypto_scalarmult_ristretto255(rbcl.crypto_core_ristretto255_scalar_invert(k), q) == p
print("ok")
"""


def _run(tmp: Path, imports: str) -> list[str]:
    env = {**os.environ, "TMPDIR": str(tmp), "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", _SCRIPT.format(imports=imports)], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
    return sorted(p.name for p in tmp.iterdir())


@pytest.mark.skipif(os.name != "posix", reason="a loaded library's file can only be removed on POSIX")
def test_fedrisk_removes_the_copy_of_libsodium_rbcl_writes_at_import(tmp_path):
    bare, ours = tmp_path / "bare", tmp_path / "ours"
    bare.mkdir(), ours.mkdir()
    # rbcl alone leaves its 2.8 MB copy of libsodium behind in $TMPDIR, one per importing process
    left = _run(bare, "import rbcl")
    assert len(left) == 1 and left[0].endswith(".so"), left
    # through fedrisk (as every party process and PSI worker imports it) nothing is left
    assert _run(ours, "import fedrisk.crypto.psi, fedrisk.crypto.oprf\nfrom fedrisk.crypto.sodium import rbcl") == []
