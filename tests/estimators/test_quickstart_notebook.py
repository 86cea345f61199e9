"""examples/quickstart.ipynb runs headless (nbclient) with fewer rows and trees, outputs in tmp."""
from __future__ import annotations

import os

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def test_quickstart_notebook_executes(tmp_path, repo, shared_data):
    nbformat = pytest.importorskip("nbformat", reason="the dev extra (nbclient, nbformat, ipykernel) is not installed")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(repo / "examples" / "quickstart.ipynb", as_version=4)
    params = next(c for c in nb.cells if c.cell_type == "code" and "ROWS = None" in c.source)
    params.source = f'ROWS = 3000\nN_TREES = 3\nOUT = {str(tmp_path)!r}'
    # the kernel imports this checkout's fedrisk, whatever is installed
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")]))}
    client = nbclient.NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(repo)}})
    client.execute(env=env)
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "SecureBoost AUC" in text and "LR AUC" in text and "horizontal AUC" in text
    html = [o for c in nb.cells for o in c.get("outputs", []) if "text/html" in o.get("data", {})]
    assert any("iframe" in o["data"]["text/html"] for o in html), "the report renders inline"
    assert (tmp_path / "quickstart-secureboost" / "model-payco.json").is_file()
