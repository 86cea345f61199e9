"""Development PKI: a CA and one certificate + key per participant, for mutual TLS.

A participant's identity *is* the name in its certificate (CN and DNS SAN). Servers require
client certificates signed by the job's CA and check that the name matches the claimed sender;
clients check that the server certificate carries the name of the party they meant to reach.

Production deployments use the institutions' own PKI files laid out the same way
(``ca.pem``, ``NAME.pem``, ``NAME-key.pem``); these dev certificates are for demos and tests.
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
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedrisk.errors import ConfigError

__all__ = ["make_dev_pki", "TlsFiles", "tls_files", "cert_name"]


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
    ca_cert_path, ca_key_path = out / "ca.pem", out / "ca-key.pem"
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
    return out


def tls_files(certs_dir: str | Path, name: str) -> TlsFiles:
    """Load ``ca.pem``, ``NAME.pem`` and ``NAME-key.pem`` from ``certs_dir`` with clear errors."""
    d = Path(certs_dir)
    paths = {"ca": d / "ca.pem", "cert": d / f"{name}.pem", "key": d / f"{name}-key.pem"}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise ConfigError(f"party {name!r}: TLS files missing: {', '.join(missing)}; "
                          f"make dev ones with `fedrisk certs --parties {name},... --out {d}` or point security.certs at your PKI")
    return TlsFiles(*(paths[k].read_bytes() for k in ("ca", "cert", "key")))


def cert_name(pem: bytes) -> str:
    """The common name in a PEM certificate."""
    cert = x509.load_pem_x509_certificate(pem)
    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else ""
