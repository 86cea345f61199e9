"""``fedrisk predict``: score new rows with a trained model.

Horizontal models are held whole by every bank, so scoring is local: no message leaves. Vertical
models are split across parties; their files name the job, and scoring runs the federated
inference protocol (each feature holder contributes only its partial score, only the label
holder sees the result).
"""
from __future__ import annotations

from pathlib import Path

from fedrisk.errors import ConfigError
from fedrisk.model_files import load_model, score_lr
from fedrisk.runtime.evaluation import write_scores

__all__ = ["predict_file"]


def predict_file(model_path: str | Path, data: str | Path, out: str | Path, id_col: str | None = None, *,
                 session: str | None = None, spawn: bool = True, certs: str | Path | None = None) -> int:
    """Score ``data`` with ``model_path`` and write ``id,score`` to ``out``; return the row count.

    ``id_col`` defaults to the id column the model was trained with (``"id"`` for older models).
    """
    from fedrisk.data.loading import load_party_table

    model = load_model(model_path)
    fmt = model["format"]
    id_col = id_col or model.get("id") or "id"
    if fmt == "fedrisk.lr":
        table = load_party_table(data, party="predict", id_col=id_col, label_col=None, features=model["features"])
        score = score_lr(model, table.X)
        write_scores(Path(out), table.ids, None, score)
        return len(score)
    if fmt == "fedrisk.scorecard":
        import pandas as pd

        from fedrisk.data.loading import load_party_frame
        from fedrisk.finance.scorecard import Scorecard

        frame = load_party_frame(data, party="predict", id_col=id_col, features=model["features"], require_label=False)
        points, prob = Scorecard.score_saved(model, frame.X)
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"id": frame.ids, "points": points, "score": prob}).to_csv(out, index=False, float_format="%.8g")
        return len(points)
    if fmt.startswith("fedrisk.vertical"):
        from fedrisk.runtime.inference import predict_vertical

        return predict_vertical(Path(model_path), model, Path(data), Path(out), id_col=id_col, session=session,
                                spawn=spawn, certs=certs)
    raise ConfigError(f"model file {model_path} has format {fmt!r}, which this version cannot score")
