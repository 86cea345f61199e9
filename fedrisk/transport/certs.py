"""Development PKI: a CA and one certificate + key per participant, for mutual TLS.

A participant's identity *is* the name in its certificate, under one rule that the server and
the client apply alike (:func:`certificate_identity`): the certificate has exactly one common
name, and its DNS subject alternative names are either absent or exactly that name. Servers
require client certificates signed by the job's CA and check that the identity matches the
claimed sender; clients pin the server's name (gRPC checks it against the SAN, or the CN when
there is no SAN, which under the rule is the same name) and every party's own certificate is
checked against the rule when it is loaded, so a certificate naming two parties is refused on
both sides.

Layout written by :func:`make_dev_pki` (and expected of an institution's own PKI files)::

    OUT/ca.pem                   public: copy to every host
    OUT/NAME.pem                 public: to the host of NAME, and to every host of a job with
                                 secure aggregation (it verifies each party's signed keys)
    OUT/NAME-key.pem             the host that runs party NAME only
    OUT/private-ca/ca-key.pem    never copied to a party host: it can mint any identity
    OUT/README.txt               the same, as a list of files per host

Private keys are written 0600 and :func:`tls_files` refuses one that group or others can read.
Keys are ECDSA P-256, which also lets secure aggregation sign its per-round public keys with
the same identity.
"""
from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedrisk.errors import ConfigError

__all__ = ["make_dev_pki", "TlsFiles", "tls_files", "cert_name", "certificate_identity", "check_private_file",
           "CA_KEY"]

#: where the dev CA's private key lives, relative to the certificate folder
CA_KEY = Path("private-ca") / "ca-key.pem"


@dataclass(frozen=True)
class TlsFiles:
    """PEM bytes a participant needs: the CA to trust, its own certificate and private key."""

    ca: bytes
    cert: bytes
    key: bytes


def _write(path: Path, data: bytes, private: bool = False) -> None:
    if private:
        # created 0600, never readable by others even for a moment
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(path, 0o600)
    else:
        path.write_bytes(data)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(k: ec.EllipticCurvePrivateKey) -> bytes:
    return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def make_dev_pki(names: Iterable[str], out: str | Path, days: int = 30, ca_name: str = "fedrisk dev CA") -> Path:
    """Create ``out/ca.pem`` (+ ``ca-key.pem``) and ``out/NAME.pem`` + ``out/NAME-key.pem`` per name.

    Reuses an existing CA in ``out`` so that more parties can be added later.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc)
    ca_cert_path, ca_key_path = out / "ca.pem", out / CA_KEY
    if not ca_key_path.exists() and (out / "ca-key.pem").exists():
        ca_key_path = out / "ca-key.pem"  # a folder made before the CA key moved apart
    if ca_cert_path.exists() and not ca_key_path.exists():
        raise ConfigError(f"{ca_cert_path} exists but {ca_key_path} does not: cannot issue more certificates from "
                          f"that CA, and replacing it would invalidate the certificates it signed; use another folder")
    if ca_cert_path.exists() and ca_key_path.exists():
        ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), None)
        ca_cert = x509.load_pem_x509_certificate(ca_cert_path.read_bytes())
    else:
        ca_key = _key()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ca_name)])
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .sign(ca_key, hashes.SHA256())
        )
        ca_key_path.parent.mkdir(mode=0o700, exist_ok=True)
        os.chmod(ca_key_path.parent, 0o700)
        _write(ca_key_path, _pem_key(ca_key), private=True)
        _write(ca_cert_path, ca_cert.public_bytes(serialization.Encoding.PEM))
    for name in names:
        key = _key()
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256())
        )
        _write(out / f"{name}-key.pem", _pem_key(key), private=True)
        _write(out / f"{name}.pem", cert.public_bytes(serialization.Encoding.PEM))
    _write_readme(out, ca_key_path)
    return out


def _write_readme(out: Path, ca_key_path: Path) -> None:
    names = sorted(p.name[:-len("-key.pem")] for p in out.glob("*-key.pem") if p.name != "ca-key.pem")
    lines = [
        "fedrisk development PKI: which file goes to which host",
        "",
        f"ca.pem          public; copy to every host",
        *[f"{n}.pem, {n}-key.pem   to the host that runs {n!r}; the key to that host only (it stays 0600)" for n in names],
        "NAME.pem        public: a job with secure aggregation also needs every participant's certificate",
        "                on every host (each party's signed keys are checked with them)",
        f"{ca_key_path.relative_to(out)}   to NO party host: whoever holds it can mint any party's identity;",
        "                keep it where certificates are issued, or delete it once all are issued",
        "",
        "Each host then runs: fedrisk party JOB.toml --as NAME --certs FOLDER_WITH(ca.pem, *.pem, NAME-key.pem)",
        "(see docs/operations.md, 'Certificates')",
    ]
    _write(out / "README.txt", ("\n".join(lines) + "\n").encode())


def check_private_file(path: Path, what: str) -> None:
    """Refuse a private key that group or others may read (one line naming the file and the fix)."""
    mode = path.stat().st_mode & 0o777
    if os.name == "posix" and mode & 0o077:
        raise ConfigError(f"{what} {path} is readable by group or others (mode {mode:03o}); "
                          f"run `chmod 600 {path}` and keep it on its own host only")


def tls_files(certs_dir: str | Path, name: str, own_ca: bytes | None = None) -> TlsFiles:
    """Load ``ca.pem``, ``NAME.pem`` and ``NAME-key.pem`` from ``certs_dir`` with clear errors.

    The party's own certificate is checked as its partners will check it (see
    :func:`check_own_certificate`), so a party never starts with a certificate they refuse.
    ``own_ca`` is the PEM of the party's pinned CA (``parties.NAME.ca``), when the spec names one.
    """
    d = Path(certs_dir)
    paths = {"ca": d / "ca.pem", "cert": d / f"{name}.pem", "key": d / f"{name}-key.pem"}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise ConfigError(f"party {name!r}: TLS files missing: {', '.join(missing)}; "
                          f"make dev ones with `fedrisk certs --parties {name},... --out {d}` or point security.certs at your PKI")
    check_private_file(paths["key"], f"party {name!r}: private key")
    files = TlsFiles(*(paths[k].read_bytes() for k in ("ca", "cert", "key")))
    try:
        ident = certificate_identity(x509.load_pem_x509_certificate(files.cert))
    except ValueError as e:
        raise ConfigError(f"party {name!r}: certificate {paths['cert']}: {e}") from None
    if ident != name:
        raise ConfigError(f"party {name!r}: certificate {paths['cert']} identifies {ident!r}, not {name!r}; "
                          "use the certificate issued for this party")
    check_own_certificate(name, files, paths, own_ca)
    return files


def check_own_certificate(name: str, files: TlsFiles, paths: dict[str, Path], own_ca: bytes | None = None) -> None:
    """Refuse, with one line, an own certificate that the partners' TLS would refuse.

    Otherwise the party starts, its partners' servers reject it, and it waits out
    ``connect_timeout`` to blame the partner ("unreachable ... is it running?"). Checked: the
    validity period, that the private key belongs to the certificate, and that the certificate was
    issued by a CA in ``ca.pem`` (the federation's CA), or by the party's pinned CA when it has one.
    """
    cert = x509.load_pem_x509_certificate(files.cert)
    now = dt.datetime.now(dt.timezone.utc)
    if cert.not_valid_after_utc < now:
        raise ConfigError(f"party {name!r}: its certificate {paths['cert']} expired on "
                          f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC; partners refuse it: renew it "
                          f"(dev certificates: `fedrisk certs --parties ... --days N`)")
    if cert.not_valid_before_utc > now:
        raise ConfigError(f"party {name!r}: its certificate {paths['cert']} is valid only from "
                          f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC; check this host's clock, or the date the "
                          "certificate was issued with")
    try:
        key = serialization.load_pem_private_key(files.key, None)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"party {name!r}: private key {paths['key']} cannot be read ({e}); it must be an "
                          "unencrypted PEM key") from None
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(serialization.Encoding.PEM, pub) != cert.public_key().public_bytes(
            serialization.Encoding.PEM, pub):
        raise ConfigError(f"party {name!r}: private key {paths['key']} does not belong to the certificate "
                          f"{paths['cert']}; copy the key that was issued with that certificate")
    try:
        issuers = x509.load_pem_x509_certificates(own_ca if own_ca is not None else files.ca)
    except ValueError as e:
        raise ConfigError(f"party {name!r}: CA file {paths['ca']} is not a PEM certificate ({e})") from None
    for ca in issuers:
        try:
            cert.verify_directly_issued_by(ca)
            return
        except (ValueError, TypeError, InvalidSignature):
            continue
    where = "its pinned CA (parties." + name + ".ca)" if own_ca is not None else f"the CA in {paths['ca']}"
    raise ConfigError(f"party {name!r}: its certificate {paths['cert']} was not issued by {where}; partners trust only that CA, so they would refuse this party: "
                      f"use the certificate the federation's CA issued to {name!r}, or the federation's ca.pem")


def certificate_identity(cert: x509.Certificate) -> str:
    """The party a certificate names, under the one rule both server and client apply.

    Exactly one common name; DNS subject alternative names absent or exactly ``[CN]``. Raises
    ``ValueError`` saying which part breaks the rule (a certificate that names two parties could
    otherwise be one party to a client and another to a server).
    """
    cns = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if len(cns) != 1:
        raise ValueError(f"a party certificate needs exactly one common name, this one has {len(cns)}")
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = sans.get_values_for_type(x509.DNSName)
        other = [g for g in sans if not isinstance(g, x509.DNSName)]
    except x509.ExtensionNotFound:
        dns, other = [], []
    if other or (dns and dns != cns):
        raise ValueError(f"its subject alternative names {[*dns, *map(str, other)]} must be exactly its common name "
                         f"{cns[0]!r} (or absent)")
    return cns[0]


def cert_name(pem: bytes) -> str:
    """The common name in a PEM certificate."""
    cert = x509.load_pem_x509_certificate(pem)
    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else ""
