"""Files and keys (issue 12 items 11, 12): private modes, the CA key apart, one identity rule."""
from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fedrisk.errors import ConfigError
from fedrisk.runtime.demo import free_ports
from fedrisk.transport.certs import CA_KEY, TlsFiles, certificate_identity, make_dev_pki, tls_files
from fedrisk.transport.grpc_channel import GrpcChannel

from tests.transport.refused_send import refused_send


def test_group_readable_private_key_is_refused_with_one_line(tmp_path):
    certs = make_dev_pki(["bank-a"], tmp_path)
    key = certs / "bank-a-key.pem"
    os.chmod(key, 0o644)
    with pytest.raises(ConfigError, match=r"mode 644.*chmod 600") as e:
        tls_files(certs, "bank-a")
    assert "\n" not in str(e.value) and str(key) in str(e.value)
    os.chmod(key, 0o600)
    assert tls_files(certs, "bank-a").key == key.read_bytes()


def test_party_command_refuses_a_readable_key(tmp_path):
    certs = make_dev_pki(["bank-a", "bank-b"], tmp_path / "certs")
    os.chmod(certs / "bank-a-key.pem", 0o640)
    spec = tmp_path / "job.toml"
    p1, p2, p3 = free_ports(3)
    (tmp_path / "a.csv").write_text("id,y,x\n1,0,0.5\n2,1,0.1\n")
    spec.write_text(f'[federation]\nname = "t"\n[coordinator]\naddress = "127.0.0.1:{p3}"\n'
                    f'[parties.bank-a]\naddress = "127.0.0.1:{p1}"\ndata = "a.csv"\nid = "id"\nlabel = "y"\n'
                    f'[parties.bank-b]\naddress = "127.0.0.1:{p2}"\ndata = "a.csv"\nid = "id"\nlabel = "y"\n'
                    '[task]\nkind = "horizontal.lr"\n')
    r = subprocess.run([sys.executable, "-m", "fedrisk", "party", str(spec), "--as", "bank-a", "--out",
                        str(tmp_path / "run"), "--certs", str(certs), "--quiet"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    err = r.stderr.strip()
    assert err.startswith("error:") and "chmod 600" in err and "Traceback" not in err


def test_certs_command_keeps_the_ca_key_apart_and_says_where_files_go(tmp_path):
    out = tmp_path / "pki"
    r = subprocess.run([sys.executable, "-m", "fedrisk", "certs", "--parties", "bank-a,bank-b", "--out", str(out)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert not (out / "ca-key.pem").exists()  # nothing copied with the party files carries the CA key
    assert (out / CA_KEY).is_file()
    assert (out / CA_KEY).stat().st_mode & 0o077 == 0 and (out / CA_KEY).parent.stat().st_mode & 0o077 == 0
    for p in ("bank-a", "bank-b", "coordinator"):
        assert (out / f"{p}-key.pem").stat().st_mode & 0o077 == 0
    readme = (out / "README.txt").read_text()
    assert "bank-a.pem, bank-a-key.pem" in readme and "private-ca/ca-key.pem   to NO party host" in readme
    # more parties later: issued by the same CA (found in its new place)
    make_dev_pki(["bank-c"], out)
    ca = x509.load_pem_x509_certificate((out / "ca.pem").read_bytes())
    x509.load_pem_x509_certificate((out / "bank-c.pem").read_bytes()).verify_directly_issued_by(ca)


def test_cli_outputs_are_private_whatever_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        out = tmp_path / "pki"
        r = subprocess.run([sys.executable, "-m", "fedrisk", "certs", "--parties", "bank-a", "--out", str(out)],
                           capture_output=True, text=True, timeout=60)
    finally:
        os.umask(old)
    assert r.returncode == 0, r.stderr
    for f in [out, *out.rglob("*")]:
        assert f.stat().st_mode & 0o077 == 0, f"{f} is {f.stat().st_mode & 0o777:o}"


# -- one identity rule -------------------------------------------------------------------------
def _cert(ca_dir: Path, cn: list[str], sans: list[str] | None) -> TlsFiles:
    ca_key = serialization.load_pem_private_key((ca_dir / CA_KEY).read_bytes(), None)
    ca = x509.load_pem_x509_certificate((ca_dir / "ca.pem").read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    b = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, c) for c in cn]))
         .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - dt.timedelta(minutes=1)).not_valid_after(now + dt.timedelta(days=1)))
    if sans is not None:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(s) for s in sans]), critical=False)
    cert = b.sign(ca_key, hashes.SHA256())
    return TlsFiles((ca_dir / "ca.pem").read_bytes(), cert.public_bytes(serialization.Encoding.PEM),
                    key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))


@pytest.mark.parametrize("cn,sans,ok", [
    (["bank-a"], ["bank-a"], True),
    (["bank-a"], None, True),
    (["bank-b"], ["bank-a", "bank-b"], False),   # names two parties: a client would take it for bank-a
    (["bank-a", "bank-b"], ["bank-a"], False),   # two common names
    (["bank-b"], ["bank-a"], False),
])
def test_identity_rule(tmp_path, cn, sans, ok):
    ca = make_dev_pki([], tmp_path)
    cert = x509.load_pem_x509_certificate(_cert(ca, cn, sans).cert)
    if ok:
        assert certificate_identity(cert) == cn[0]
    else:
        with pytest.raises(ValueError):
            certificate_identity(cert)


def test_two_name_certificate_is_refused_by_the_server_and_when_loaded(tmp_path):
    ca = make_dev_pki(["bank-a"], tmp_path)
    two = _cert(ca, ["bank-b"], ["bank-a", "bank-b"])
    (ca / "bank-b.pem").write_bytes(two.cert)
    (ca / "bank-b-key.pem").write_bytes(two.key)
    os.chmod(ca / "bank-b-key.pem", 0o600)
    with pytest.raises(ConfigError, match="subject alternative names"):
        tls_files(ca, "bank-b")
    p1, p2 = free_ports(2)
    addrs = {"bank-a": f"127.0.0.1:{p1}", "bank-b": f"127.0.0.1:{p2}"}
    a = GrpcChannel("bank-a", addrs, "job", tls_files(ca, "bank-a"), connect_timeout=5).start()
    b = GrpcChannel("bank-b", addrs, "job", two, connect_timeout=5)
    with refused_send([a, b], b, "bank-a", "identity rule", kind="metric"):
        pass


def test_client_refuses_a_server_whose_certificate_names_two_parties(tmp_path):
    # gRPC alone accepts any certificate with a matching DNS SAN: CN=bank-c, SAN=[bank-b, bank-c]
    # passed as bank-b and received bank-a's frames meant for bank-b
    ca = make_dev_pki(["bank-a"], tmp_path)
    two = _cert(ca, ["bank-c"], ["bank-b", "bank-c"])
    p1, p2 = free_ports(2)
    addrs = {"bank-a": f"127.0.0.1:{p1}", "bank-b": f"127.0.0.1:{p2}"}
    fake_b = GrpcChannel("bank-b", addrs, "job", two, connect_timeout=5).start()
    a = GrpcChannel("bank-a", addrs, "job", tls_files(ca, "bank-a"), connect_timeout=5)
    with refused_send([a, fake_b], a, "bank-b", "identity rule", kind="metric"):
        assert not fake_b.mailbox._boxes


def _reissue(certs: Path, name: str, out: Path, *, before_days: float, after_days: float) -> None:
    """A certificate for ``name`` from the CA in ``certs``, valid from now+before to now+after, into ``out``."""
    ca_key = serialization.load_pem_private_key((certs / CA_KEY).read_bytes(), None)
    ca = x509.load_pem_x509_certificate((certs / "ca.pem").read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now + dt.timedelta(days=before_days)).not_valid_after(now + dt.timedelta(days=after_days))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    (out / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k = out / f"{name}-key.pem"
    k.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    k.chmod(0o600)


@pytest.mark.parametrize("case, words", [
    ("expired", r"certificate .*payco\.pem expired on \d{4}-\d\d-\d\d .*renew"),
    ("not_yet", r"certificate .*payco\.pem is valid only from \d{4}-\d\d-\d\d .*clock"),
    ("other_ca", r"certificate .*payco\.pem was not issued by the CA in .*ca\.pem"),
    ("ca_of_other_federation", r"certificate .*payco\.pem was not issued by the CA in .*ca\.pem"),
    ("key_of_other_cert", r"private key .*payco-key\.pem does not belong to the certificate .*payco\.pem"),
])
def test_a_party_whose_own_certificate_partners_will_refuse_is_told_before_it_starts(tmp_path, case, words):
    """Before: the party started and, after connect_timeout, blamed its partner ("unreachable ... is it
    running?") while the partner had refused its certificate. The party can see it from its own files."""
    certs = make_dev_pki(["lender", "payco"], tmp_path / "a")
    other = make_dev_pki(["lender", "payco"], tmp_path / "b")
    if case == "expired":
        _reissue(certs, "payco", certs, before_days=-10, after_days=-1)
    elif case == "not_yet":
        _reissue(certs, "payco", certs, before_days=2, after_days=10)
    elif case == "other_ca":
        for f in ("payco.pem", "payco-key.pem"):
            (certs / f).write_bytes((other / f).read_bytes())
    elif case == "ca_of_other_federation":
        (certs / "ca.pem").write_bytes((other / "ca.pem").read_bytes())
    else:
        (certs / "payco-key.pem").write_bytes((other / "payco-key.pem").read_bytes())
    with pytest.raises(ConfigError, match=words) as e:
        tls_files(certs, "payco")
    assert "\n" not in str(e.value) and str(e.value).startswith("party 'payco'")
    if case != "ca_of_other_federation":  # the other party's files in the same folder still load
        assert tls_files(certs, "lender").cert == (certs / "lender.pem").read_bytes()


def test_own_certificate_is_checked_against_the_partys_pinned_ca(tmp_path):
    """With parties.NAME.ca (an institution's own CA), ca.pem may be a bundle without that CA."""
    mine = make_dev_pki(["payco"], tmp_path / "mine", ca_name="Payco CA")
    fed = make_dev_pki(["lender"], tmp_path / "fed", ca_name="Lender CA")
    own_ca = (mine / "ca.pem").read_bytes()
    (mine / "ca.pem").write_bytes((fed / "ca.pem").read_bytes())  # the bundle this host trusts for partners
    assert tls_files(mine, "payco", own_ca=own_ca).cert == (mine / "payco.pem").read_bytes()
    with pytest.raises(ConfigError, match="not issued by the CA in"):
        tls_files(mine, "payco")
    (mine / "ca.pem").write_bytes((fed / "ca.pem").read_bytes() + own_ca)  # a bundle holding both: fine
    assert tls_files(mine, "payco").key == (mine / "payco-key.pem").read_bytes()
