import pytest

from fedrisk.errors import ConfigError
from fedrisk.runtime.spec import load_spec, shared_settings

GOOD = """
[federation]
name = "t"
[coordinator]
address = "127.0.0.1:50000"
[parties.bank1]
address = "127.0.0.1:50001"
data = "b1.csv"
label = "y"
[parties.bank2]
address = "127.0.0.1:50002"
data = "b2.csv"
label = "y"
[task]
kind = "horizontal.lr"
rounds = 3
"""


def write(tmp_path, text, name="job.toml"):
    p = tmp_path / name
    p.write_text(text)
    for f in ("b1.csv", "b2.csv"):
        (tmp_path / f).write_text("id,y,x0\n1,0,0.5\n2,1,0.1\n")
    return p


def test_good_spec_loads_and_resolves_paths_relative_to_the_file(tmp_path):
    spec = load_spec(write(tmp_path, GOOD))
    assert spec.participants() == ["bank1", "bank2", "coordinator"]
    assert spec.data_path("bank1") == (tmp_path / "b1.csv").resolve()
    spec.check_files()


@pytest.mark.parametrize("text, message", [
    (GOOD.replace('address = "127.0.0.1:50001"', 'adress = "127.0.0.1:50001"'), r"parties\.bank1\.adress: unknown key \(did you mean 'address'\?\)"),
    (GOOD.replace("rounds = 3", "roundz = 3"), r"task\.roundz: unknown setting \(did you mean 'rounds'\?\)"),
    (GOOD.replace("rounds = 3", "rounds = 0"), r"task\.rounds"),
    (GOOD.replace('"127.0.0.1:50002"', '"localhost"'), r"parties\.bank2\.address: 'localhost' is not a host:port"),
    (GOOD.replace('"127.0.0.1:50002"', '"127.0.0.1:50001"'), r"both use address 127\.0\.0\.1:50001"),
    (GOOD + '[parties.bank1]\naddress = "127.0.0.1:50009"\n', r"declared twice"),
    (GOOD.replace('kind = "horizontal.lr"', 'kind = "horizontal.svm"'), r"task\.kind 'horizontal\.svm' is not known"),
    (GOOD.replace("[parties.bank2]", "[parties.Bank2]"), r"party name 'Bank2'"),
    (GOOD.replace('[coordinator]\naddress = "127.0.0.1:50000"', ""), r"needs a \[coordinator\]"),
    (GOOD.replace('label = "y"\n[parties.bank2]', '[parties.bank2]'), r"every bank needs label"),
    (GOOD.replace('data = "b1.csv"', 'data = "b1.csv"\nmissing = "keep"'),
     r"parties \['bank1'\] set missing = 'keep', but task 'horizontal\.lr' cannot use missing values; use 'reject' or "
     r"'mean' \(only horizontal\.gbdt and vertical\.secureboost learn where they go\)"),
    ("[federation\nname='x'", r"not valid TOML"),
])
def test_bad_specs_fail_with_one_clear_line(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message) as e:
        load_spec(write(tmp_path, text))
    assert "\n" not in str(e.value)


def test_missing_spec_and_missing_data_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_spec(tmp_path / "nope.toml")
    spec = load_spec(write(tmp_path, GOOD))
    (tmp_path / "b2.csv").unlink()
    with pytest.raises(ConfigError, match=r"party 'bank2': data file .*b2\.csv does not exist"):
        spec.check_files()
    spec.check_files("bank1")  # a party only needs its own file


def test_shared_settings_ignore_local_paths(tmp_path):
    a = load_spec(write(tmp_path, GOOD))
    other = tmp_path / "other"
    other.mkdir()
    b = load_spec(write(other, GOOD.replace('data = "b1.csv"', 'data = "elsewhere/b1.csv"')))
    assert shared_settings(a) == shared_settings(b)
    c = load_spec(write(other, GOOD.replace("rounds = 3", "rounds = 4"), "c.toml"))
    assert shared_settings(a) != shared_settings(c)


def test_pinned_party_cas_are_read_relative_to_the_spec(tmp_path):
    (tmp_path / "bank2-ca.pem").write_bytes(b"PEM")
    spec = load_spec(write(tmp_path, GOOD.replace('data = "b2.csv"', 'data = "b2.csv"\nca = "bank2-ca.pem"')))
    assert spec.pinned_cas() == {"bank2": b"PEM"}
    (tmp_path / "bank2-ca.pem").unlink()
    with pytest.raises(ConfigError, match="participant 'bank2': CA file .* cannot be read"):
        spec.pinned_cas()


def test_csv_dialect_and_label_coding_per_party(tmp_path):
    text = GOOD.replace('label = "y"\n[parties.bank2]', 'label = "y"\nsep = ";"\ndecimal = ","\npositive = "bad"\n[parties.bank2]')
    spec = load_spec(write(tmp_path, text))
    assert spec.parties["bank1"].read_options() == {"sep": ";", "decimal": ",", "positive": "bad"}
    assert spec.parties["bank2"].read_options() == {"sep": None, "decimal": ".", "positive": None}
    for bad, msg in (('sep = ";"\ndelimiter = ","', "not both"), ('sep = ";;"', "one character"),
                     ('decimal = ","', "other than the separator")):
        with pytest.raises(ConfigError, match=msg):
            load_spec(write(tmp_path, GOOD.replace('label = "y"\n[parties.bank2]', f'label = "y"\n{bad}\n[parties.bank2]')))


def test_vertical_party_reads_its_dialect_and_labels_from_the_spec(tmp_path):
    from fedrisk.tasks.vertical_roles import load_table

    (tmp_path / "l.csv").write_text("id;y;a;is_test\nC01;bad;0,5;1\nC02;good;1,5;0\n")
    (tmp_path / "p.csv").write_text("id,b\nC01,1\n")
    p = tmp_path / "job.toml"
    p.write_text('[federation]\nname = "v"\n[parties.lender]\naddress = "127.0.0.1:1"\ndata = "l.csv"\nlabel = "y"\n'
                 'sep = ";"\ndecimal = ","\npositive = "bad"\n[parties.payco]\naddress = "127.0.0.1:2"\ndata = "p.csv"\n'
                 '[task]\nkind = "vertical.lr"\n[evaluation]\ntest_column = "is_test"\n')
    t = load_table(load_spec(p), "lender")
    assert t.feature_names == ["a"] and t.X[:, 0].tolist() == [0.5, 1.5] and t.y.tolist() == [1, 0]
    assert list(t.ids) == ["C01", "C02"] and t.extra["is_test"].tolist() == [1, 0]


def test_vertical_split_settings_are_refused_for_horizontal_jobs(tmp_path):
    with pytest.raises(ConfigError, match="evaluation.test_fraction is for vertical jobs"):
        load_spec(write(tmp_path, GOOD + "[evaluation]\ntest_fraction = 0.2\n"))


GBDT = GOOD.replace('kind = "horizontal.lr"\nrounds = 3', 'kind = "horizontal.gbdt"\nn_trees = 3')


@pytest.mark.parametrize("table, message", [
    ("monotone = { x0 = 2 }", r"parties\.bank1: monotone x0 = 2: use 1 \(score rises with it\), -1 \(falls\) or 0"),
    ('monotone = { x0 = "up" }', r"parties\.bank1\.monotone\.x0"),
    ('features = ["x0"]\nmonotone = { x9 = 1 }', r"monotone 'x9' is not in this party's features \['x0'\]"),
    ("monotone = { y = 1 }", r"monotone 'y' is the label column"),
    ('exclude = ["x0"]\nmonotone = { x0 = 1 }', r"monotone 'x0' is excluded"),
])
def test_bad_monotone_tables_fail_with_one_line(tmp_path, table, message):
    text = GBDT.replace('data = "b1.csv"', f'data = "b1.csv"\n{table}')
    with pytest.raises(ConfigError, match=message) as e:
        load_spec(write(tmp_path, text))
    assert "\n" not in str(e.value)


def test_monotone_only_for_tree_tasks(tmp_path):
    spec = load_spec(write(tmp_path, GBDT.replace('data = "b1.csv"', 'data = "b1.csv"\nmonotone = { x0 = 1 }')))
    assert spec.parties["bank1"].monotone == {"x0": 1}
    with pytest.raises(ConfigError, match=r"monotone constraints, but task 'horizontal.lr' grows no trees"):
        load_spec(write(tmp_path, GOOD.replace('data = "b1.csv"', 'data = "b1.csv"\nmonotone = { x0 = 1 }')))


@pytest.mark.parametrize("table, message", [
    ('categorical = ["id"]', r"categorical 'id' is the id column"),
    ('features = ["x0"]\ncategorical = ["grade"]', r"categorical 'grade' is not in this party's features"),
    ('exclude = ["x0"]\ncategorical = ["x0"]', r"categorical 'x0' is also excluded"),
    ('categorical = ["x0"]\nmonotone = { x0 = 1 }', r"'x0' is both categorical and monotone"),
])
def test_bad_categorical_tables_fail_with_one_line(tmp_path, table, message):
    text = GBDT.replace('data = "b1.csv"', f'data = "b1.csv"\n{table}')
    with pytest.raises(ConfigError, match=message):
        load_spec(write(tmp_path, text))


def test_categorical_only_for_tasks_that_encode_it(tmp_path):
    # horizontal.lr / horizontal.gbdt encode agreed levels ([task] categories); the WOE task bins
    # text itself and refuses a party's categorical table
    load_spec(write(tmp_path, GBDT.replace('data = "b1.csv"', 'data = "b1.csv"\ncategorical = ["x0"]')))
    woe = GOOD.replace('kind = "horizontal.lr"\nrounds = 3', 'kind = "horizontal.woe"')
    with pytest.raises(ConfigError, match=r"declare categorical columns, but task 'horizontal.woe' takes them from "
                                          r"\[task\] categorical = \[\.\.\.\] \(it bins text columns itself\): move them there"):
        load_spec(write(tmp_path, woe.replace('data = "b1.csv"', 'data = "b1.csv"\ncategorical = ["x0"]'), "w.toml"))


@pytest.mark.parametrize("base", [GOOD, GBDT], ids=["horizontal.lr", "horizontal.gbdt"])
def test_categories_refused_with_privacy(tmp_path, base):
    # the banks' level agreement sums counts without noise: outside the [privacy] budget
    text = base + 'categories = { x0 = ["a", "b"] }\n[privacy]\nepsilon = 4.0\ndelta = 1e-5\n'
    with pytest.raises(ConfigError, match=r"categories cannot be combined with \[privacy\]") as e:
        load_spec(write(tmp_path, text))
    assert "\n" not in str(e.value)
    load_spec(write(tmp_path, base + 'categories = { x0 = ["a", "b"] }\n', "ok.toml"))


def test_listen_is_where_a_participant_binds_and_partners_need_not_agree_on_it(tmp_path):
    a = load_spec(write(tmp_path, GOOD))
    text = GOOD.replace('address = "127.0.0.1:50001"', 'address = "127.0.0.1:50001"\nlisten = "0.0.0.0:6001"')
    text = text.replace('address = "127.0.0.1:50000"', 'address = "127.0.0.1:50000"\nlisten = "127.0.0.1:6000"')
    b = load_spec(write(tmp_path, text, "b.toml"))
    assert b.listen_address("bank1") == "0.0.0.0:6001" and b.listen_address("coordinator") == "127.0.0.1:6000"
    assert b.listen_address("bank2") == b.addresses()["bank2"] == "127.0.0.1:50002"
    assert b.addresses()["bank1"] == "127.0.0.1:50001"  # what the others dial
    assert shared_settings(a) == shared_settings(b)  # a local setting: the handshake ignores it
    with pytest.raises(ConfigError, match="host:port"):
        load_spec(write(tmp_path, GOOD.replace('data = "b1.csv"', 'listen = "nowhere"\ndata = "b1.csv"'), "c.toml"))


@pytest.mark.parametrize("text, message", [
    (GOOD.replace("rounds = 3", "rounds = true"), r"task\.rounds: true is a yes/no value; give a number"),
    (GOOD.replace("rounds = 3", "rounds = 3\nl2 = false"), r"task\.l2: false is a yes/no value; give a number"),
    (GOOD.replace('[task]', '[security]\nconnect_timeout = true\n[task]'), r"security\.connect_timeout: true is a yes/no value"),
    (GOOD.replace('name = "t"', 'name = "t"\nseed = true'), r"federation\.seed: true is a yes/no value"),
])
def test_a_yes_no_value_where_a_number_belongs_is_refused(tmp_path, text, message):
    """`rounds = true` used to load as rounds = 1 (pydantic turns booleans into 1/0): a run of one round."""
    with pytest.raises(ConfigError, match=message) as e:
        load_spec(write(tmp_path, text))
    assert "\n" not in str(e.value)


def test_a_folder_given_as_data_file_is_named_as_a_folder(tmp_path):
    spec = load_spec(write(tmp_path, GOOD.replace('data = "b2.csv"', 'data = "."')))
    with pytest.raises(ConfigError, match=r"party 'bank2': data = .* is a folder, not a file"):
        spec.check_files()


def test_paths_starting_with_a_tilde_are_the_users_home(tmp_path, monkeypatch):
    """`data = "~/data/bank1.csv"` was read as a folder named '~' beside the spec."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "b1.csv").write_text("id,y,x0\n1,0,0.5\n2,1,0.1\n")
    spec = load_spec(write(tmp_path, GOOD.replace('data = "b1.csv"', 'data = "~/b1.csv"')))
    assert spec.data_path("bank1") == tmp_path / "home" / "b1.csv"
    spec.check_files("bank1")


def test_the_coordinators_ca_path_is_local_and_never_sent_in_the_hello(tmp_path):
    """The coordinator's ``ca`` is a file on each host: it was in the shared settings, so its path crossed
    to every partner in ``ctl.hello`` and the banks had to spell it exactly as the coordinator does."""
    (tmp_path / "pki").mkdir()
    (tmp_path / "pki" / "coord-ca.pem").write_bytes(b"PEM")
    a = load_spec(write(tmp_path, GOOD.replace('address = "127.0.0.1:50000"',
                                               'address = "127.0.0.1:50000"\nca = "pki/coord-ca.pem"')))
    other = tmp_path / "bank"
    other.mkdir()
    (other / "their-copy-of-coord-ca.pem").write_bytes(b"PEM")
    b = load_spec(write(other, GOOD.replace('address = "127.0.0.1:50000"',
                                            'address = "127.0.0.1:50000"\nca = "their-copy-of-coord-ca.pem"')))
    assert a.pinned_cas()["coordinator"] == b"PEM"
    assert shared_settings(a) == shared_settings(b)
    assert "coord-ca" not in repr(shared_settings(a)) and str(tmp_path) not in repr(shared_settings(a))


@pytest.mark.parametrize("written, read", [('[-999, "?"]', ["-999", "?"]), ("[-999.5]", ["-999.5"]), ('"?"', ["?"])])
def test_na_values_written_as_numbers_or_one_text_are_read_as_texts(tmp_path, written, read):
    """``na_values = [-999]`` (unquoted) was a raw pydantic list of errors; it means the text "-999", as
    the Python API's ``na_values=[-999]`` does."""
    text = GOOD.replace('label = "y"\n[parties.bank2]', f'label = "y"\nna_values = {written}\n[parties.bank2]')
    assert load_spec(write(tmp_path, text)).parties["bank1"].read_options()["na_values"] == read
    with pytest.raises(ConfigError, match="na_values"):
        load_spec(write(tmp_path, GOOD.replace('label = "y"\n[parties.bank2]', 'label = "y"\nna_values = [true]\n[parties.bank2]')))


def test_the_keep_refusal_names_every_task_that_keeps_missing_values(tmp_path):
    """The refusal of ``missing = "keep"`` named only vertical.secureboost as a task that learns where blanks
    go, so a user of a horizontal job was never told that horizontal.gbdt takes it too."""
    import importlib

    from fedrisk.runtime.tasks import TASKS

    keepers = sorted(k for k, mod in TASKS.items() if getattr(importlib.import_module(mod), "HANDLES_MISSING", False))
    assert "horizontal.gbdt" in keepers and "vertical.secureboost" in keepers
    with pytest.raises(ConfigError) as e:
        load_spec(write(tmp_path, GOOD.replace('data = "b1.csv"', 'data = "b1.csv"\nmissing = "keep"')))
    for kind in keepers:
        assert kind in str(e.value), str(e.value)


def test_the_evaluation_file_takes_its_own_dialect_and_defaults_to_the_holders(tmp_path):
    """A ';'-bank with decimal commas may hold a plain ','-separated test file: ``[evaluation] sep / decimal /
    na_values`` say so; unset, the test file is read in the holder's dialect (specs before them read the same)."""
    holder = GOOD.replace('data = "b2.csv"\nlabel = "y"', 'data = "b2.csv"\nlabel = "y"\nsep = ";"\ndecimal = ","\n'
                          'na_values = ["?"]\npositive = "bad"')
    (tmp_path / "t.csv").write_text("id,y,x0\n1,0,0.5\n")
    plain = load_spec(write(tmp_path, holder + '[evaluation]\ntest = "t.csv"\nholder = "bank2"\n'))
    assert plain.test_read_options() == plain.parties["bank2"].read_options()
    own = load_spec(write(tmp_path, holder + '[evaluation]\ntest = "t.csv"\nholder = "bank2"\nsep = ","\n'))
    # a ','-separated file cannot keep the holder's decimal comma: '.', as for any party
    assert own.test_read_options() == {"sep": ",", "decimal": ".", "positive": "bad", "na_values": ["?"]}
    full = load_spec(write(tmp_path, holder + '[evaluation]\ntest = "t.csv"\nholder = "bank2"\nsep = "\\t"\n'
                           'decimal = ","\nna_values = [-1]\n'))
    assert full.test_read_options() == {"sep": "\t", "decimal": ",", "positive": "bad", "na_values": ["-1"]}
    # ``delimiter`` is ``sep``'s synonym here too, as in a party's table
    synonym = load_spec(write(tmp_path, holder + '[evaluation]\ntest = "t.csv"\nholder = "bank2"\ndelimiter = ","\n'))
    assert synonym.test_read_options() == own.test_read_options()
    none = load_spec(write(tmp_path, holder + '[evaluation]\ntest = "t.csv"\nholder = "bank2"\nna_values = []\n'))
    assert "na_values" not in none.test_read_options()
    # the test file's dialect is the holder's business, like the file itself
    assert shared_settings(own) == shared_settings(plain)


@pytest.mark.parametrize("table, message", [
    ('test = "t.csv"\nsep = ";;"', r"evaluation: sep ';;' must be one character"),
    ('test = "t.csv"\ndecimal = ",,"', r"evaluation: decimal ',,' must be one character"),
    ('test = "t.csv"\ndecimal = ","', r"evaluation\.decimal ',' must be one character other than the test file's separator"),
    ('test = "t.csv"\nsep = ";"\ndecimal = ";"', r"evaluation\.decimal ';' must be one character other than"),
    ('test = "t.csv"\nna_values = [" "]', r"evaluation: na_values lists an empty text"),
    ('test = "t.csv"\nna_values = [true]', r"evaluation\.na_values"),
    ('sep = ","', r"evaluation\.sep describes the evaluation\.test file, and this job has none"),
    ('test = "t.csv"\ndelimiter = ";"\nsep = ","', r"evaluation: set sep or delimiter, not both"),
    ('test = "t.csv"\ndelimiter = ";;"', r"evaluation: sep ';;' must be one character"),
])
def test_bad_evaluation_dialects_fail_with_one_line_naming_the_field(tmp_path, table, message):
    (tmp_path / "t.csv").write_text("id,y,x0\n1,0,0.5\n")
    with pytest.raises(ConfigError, match=message) as e:
        load_spec(write(tmp_path, GOOD + f"[evaluation]\n{table}\n"))
    assert "\n" not in str(e.value)


def test_a_partners_copy_of_the_spec_drops_the_test_files_dialect_with_the_file(tmp_path):
    """``fedrisk party`` keeps its view of the spec: a party that is not the evaluation holder has no test
    file there, so it has no dialect for one either (the copy must load again, e.g. for ``fedrisk predict``)."""
    import tomllib

    from fedrisk.runtime.spec_copy import dumps, party_view

    (tmp_path / "t.csv").write_text("id,y,x0\n1,0,0.5\n")
    text = GOOD + '[evaluation]\ntest = "t.csv"\nholder = "bank2"\nsep = ";"\nna_values = ["?"]\n'
    raw = tomllib.loads(text)
    for me, kept in (("bank1", {"holder": "bank2"}), ("bank2", {"holder": "bank2", "sep": ";", "na_values": ["?"]})):
        view = party_view(raw, tmp_path, me, "bank2")
        assert {k: v for k, v in view["evaluation"].items() if k != "test"} == kept
        load_spec(write(tmp_path, dumps(view), name=f"{me}.toml"))
