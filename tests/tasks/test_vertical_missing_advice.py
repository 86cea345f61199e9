"""What a vertical job says about blank cells under the default ``missing = "reject"``.

It used to say "load with missing='mean'" (the Python loader's keyword) in a job-spec run, and offered the
same mean-filling for a column blank in every row, where there is no mean to fill with. The line now names
the spec setting the task kind takes (and the notebook one), and an all-blank column is named as such."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedrisk.errors import DataError
from fedrisk.runtime.spec import load_spec
from fedrisk.tasks.vertical_roles import load_table


def _spec(tmp, kind: str, bureau: pd.DataFrame):
    rng = np.random.default_rng(0)
    n = len(bureau)
    pd.DataFrame({"id": bureau.id, "y": rng.integers(0, 2, n), "a": rng.normal(size=n)}).to_csv(tmp / "l.csv", index=False)
    bureau.to_csv(tmp / "b.csv", index=False)
    (tmp / "job.toml").write_text(f'[federation]\nname = "m"\n[parties.lender]\naddress = "127.0.0.1:1"\n'
                                  f'data = "l.csv"\nlabel = "y"\n[parties.bureau]\naddress = "127.0.0.1:2"\n'
                                  f'data = "b.csv"\n[task]\nkind = "{kind}"\n')
    return load_spec(tmp / "job.toml")


@pytest.mark.parametrize("kind, setting", [("vertical.lr", "missing = 'mean'"), ("vertical.secureboost", "missing = 'keep'")])
def test_blank_cells_name_the_spec_setting_of_the_task(tmp_path, kind, setting):
    b = pd.DataFrame({"id": range(30), "c": np.r_[np.nan, np.arange(29.0)]})
    with pytest.raises(DataError) as info:
        load_table(_spec(tmp_path, kind, b), "bureau")
    msg = str(info.value)
    assert "\n" not in msg and f"{setting} in [parties.bureau]" in msg and "load with" not in msg, msg


def test_a_column_blank_in_every_row_is_named_as_such(tmp_path):
    b = pd.DataFrame({"id": range(30), "c": np.arange(30.0), "empty": np.nan})
    with pytest.raises(DataError) as info:
        load_table(_spec(tmp_path, "vertical.lr", b), "bureau")
    msg = str(info.value)
    assert "'empty'" in msg and "every row" in msg and "exclude" in msg and "'c'" not in msg, msg
