"""``[parties.NAME] compute = "ray"``: validated with one-line errors, where the party runs."""
from __future__ import annotations

import importlib.util

import pytest

from fedrisk.errors import ConfigError
from fedrisk.runtime.spec import load_spec, shared_settings

BASE = """
[federation]
name = "t"
[parties.lender]
address = "127.0.0.1:50001"
data = "l.csv"
label = "y"
{lender}
[parties.bureau]
address = "127.0.0.1:50002"
data = "b.csv"
{bureau}
[task]
kind = "vertical.lr"
"""


def spec_file(tmp_path, bureau="", lender=""):
    (tmp_path / "l.csv").write_text("id,y,a\n1,0,0.5\n2,1,0.1\n")
    (tmp_path / "b.csv").write_text("id,c\n1,0.5\n2,0.1\n")
    p = tmp_path / "job.toml"
    p.write_text(BASE.format(bureau=bureau, lender=lender))
    return p


def test_default_is_the_local_pool_and_ray_settings_are_not_shared(tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    local = load_spec(spec_file(tmp_path))
    assert local.parties["bureau"].compute == "local" and local.compute_address("bureau") is None
    local.check_compute()
    on_ray = load_spec(spec_file(tmp_path, bureau='compute = "ray"\nray_address = "10.0.0.5:6379"'))
    assert on_ray.compute_address("bureau") == "10.0.0.5:6379" and on_ray.compute_address("lender") is None
    # a party's compute backend is its own business: partners' copies need not agree on it
    assert shared_settings(on_ray) == shared_settings(local)


def test_ray_address_falls_back_to_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.9:6379")
    spec = load_spec(spec_file(tmp_path, bureau='compute = "ray"'))
    assert spec.compute_address("bureau") == "10.0.0.9:6379"
    assert load_spec(spec_file(tmp_path, bureau='compute = "ray"\nray_address = "auto"')).compute_address("bureau") == "auto"


@pytest.mark.parametrize("table, message", [
    ('compute = "spark"', "parties.bureau.compute: Input should be 'local' or 'ray'"),
    ('ray_address = "10.0.0.5:6379"', 'ray_address is set but compute is "local"; add compute = "ray"'),
    ('compute = "ray"\nray_address = "ray-head"', "'ray-head' is not a Ray cluster address: use its head's 'host:port'"),
    ('compute = "ray"\nray_adress = "10.0.0.5:6379"', "parties.bureau.ray_adress: unknown key (did you mean 'ray_address'?)"),
])
def test_bad_compute_settings_are_one_line_errors(tmp_path, table, message):
    with pytest.raises(ConfigError) as e:
        load_spec(spec_file(tmp_path, bureau=table))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_missing_address_is_reported_where_the_party_runs(tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    spec = load_spec(spec_file(tmp_path, bureau='compute = "ray"'))  # a partner's copy loads fine
    spec.check_compute("lender")
    if importlib.util.find_spec("ray") is None:
        expected = 'party bureau: compute = "ray" needs `pip install fedrisk[ray]`'
    else:
        expected = 'party bureau: compute = "ray" needs the cluster address: ray_address = "host:port" in [parties.bureau]'
    with pytest.raises(ConfigError, match=expected.replace("[", r"\[").replace("]", r"\]")):
        spec.check_compute("bureau")


def test_ray_not_installed_is_one_line_naming_the_extra(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    spec = load_spec(spec_file(tmp_path, bureau='compute = "ray"\nray_address = "127.0.0.1:6379"'))
    with pytest.raises(ConfigError) as e:
        spec.check_compute()
    assert str(e.value) == 'party bureau: compute = "ray" needs `pip install fedrisk[ray]`'


def test_unreachable_cluster_stops_the_party_with_one_line(tmp_path):
    pytest.importorskip("ray", reason="Ray is not installed: `pip install fedrisk[ray]`")
    from fedrisk.crypto.ray_executor import RayExecutor
    from fedrisk.runtime.demo import free_ports

    port = free_ports(1)[0]  # nothing listens there
    with pytest.raises(ConfigError) as e:
        RayExecutor(f"127.0.0.1:{port}", who="party bureau")
    assert str(e.value).startswith(f"party bureau: cannot reach the Ray cluster at 127.0.0.1:{port}")
    assert "\n" not in str(e.value)
