"""mTLS between real gRPC endpoints: who is refused, and why."""
import numpy as np
import pytest

from fedrisk.errors import TransportError
from fedrisk.runtime.demo import free_ports
from fedrisk.transport.certs import cert_name, make_dev_pki, tls_files
from fedrisk.transport.grpc_channel import GrpcChannel

from tests.transport.refused_send import refused_send


@pytest.fixture()
def pki(tmp_path):
    good = make_dev_pki(["bank-a", "bank-b", "bank-c"], tmp_path / "good")
    rogue = make_dev_pki(["bank-b"], tmp_path / "rogue")
    p1, p2 = free_ports(2)
    return good, rogue, {"bank-a": f"127.0.0.1:{p1}", "bank-b": f"127.0.0.1:{p2}"}


def test_certificate_names_are_party_names(pki):
    good, _, _ = pki
    assert cert_name((good / "bank-a.pem").read_bytes()) == "bank-a"


def test_mutual_tls_round_trip(pki):
    good, _, addrs = pki
    a = GrpcChannel("bank-a", addrs, "job", tls_files(good, "bank-a"), connect_timeout=5).start()
    b = GrpcChannel("bank-b", addrs, "job", tls_files(good, "bank-b"), connect_timeout=5).start()
    try:
        a.send("bank-b", "t.x", {"w": np.arange(3.0)}, kind="model")
        np.testing.assert_array_equal(b.recv("bank-a", "t.x", timeout=5)["w"], np.arange(3.0))
        assert a.ledger.entries[0]["to"] == "bank-b"
    finally:
        a.close()
        b.close()


def test_party_with_certificate_from_another_ca_is_refused(pki):
    good, rogue, addrs = pki
    a = GrpcChannel("bank-a", addrs, "job", tls_files(good, "bank-a"), connect_timeout=5).start()
    intruder = GrpcChannel("bank-b", addrs, "job", tls_files(rogue, "bank-b"), connect_timeout=1.5)
    with refused_send([a, intruder], intruder, "bank-a", "bank-a.*unreachable"):
        assert list(a.mailbox._boxes) == []


def test_party_presenting_another_partys_certificate_is_refused(pki):
    good, _, addrs = pki
    a = GrpcChannel("bank-a", addrs, "job", tls_files(good, "bank-a"), connect_timeout=5).start()
    # a valid certificate of the job's CA, but for bank-c, used to speak as bank-b
    liar = GrpcChannel("bank-b", addrs, "job", tls_files(good, "bank-c"), connect_timeout=5)
    with refused_send([a, liar], liar, "bank-a", "refused"):
        assert a.refused and "bank-c" in a.refused[0]


def test_server_presenting_wrong_name_is_refused_by_client(pki):
    good, _, addrs = pki
    # bank-b's address is served by a process holding bank-c's certificate
    fake_b = GrpcChannel("bank-b", addrs, "job", tls_files(good, "bank-c"), connect_timeout=5).start()
    a = GrpcChannel("bank-a", addrs, "job", tls_files(good, "bank-a"), connect_timeout=1.5)
    with refused_send([a, fake_b], a, "bank-b", "certificate identifies 'bank-c'"):
        pass


def test_unreachable_party_error_names_party_and_address(pki):
    good, _, addrs = pki
    a = GrpcChannel("bank-a", addrs, "job", tls_files(good, "bank-a"), connect_timeout=0.5)
    with pytest.raises(TransportError, match=r"party 'bank-b' at 127\.0\.0\.1:\d+ unreachable"):
        a.send("bank-b", "t.x", 1, kind="model")


def test_peer_that_starts_late_is_waited_for(pki):
    import threading
    import time

    good, _, addrs = pki
    a = GrpcChannel("bank-a", addrs, "job", tls_files(good, "bank-a"), connect_timeout=10)
    holder = {}

    def late():
        time.sleep(0.8)
        holder["b"] = GrpcChannel("bank-b", addrs, "job", tls_files(good, "bank-b"), connect_timeout=5).start()

    t = threading.Thread(target=late)
    t.start()
    try:
        a.send("bank-b", "t.x", 7, kind="metric")
        t.join()
        assert holder["b"].recv("bank-a", "t.x", timeout=5) == 7
    finally:
        t.join()
        a.close()
        if "b" in holder:
            holder["b"].close()


def test_client_whose_common_name_is_not_in_its_san_is_refused(pki, tmp_path):
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from fedrisk.transport.certs import CA_KEY, TlsFiles

    good, _, addrs = pki
    ca_key = serialization.load_pem_private_key((good / CA_KEY).read_bytes(), None)
    ca = x509.load_pem_x509_certificate((good / "ca.pem").read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bank-b")]))
            .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("bank-c")]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    tls = TlsFiles((good / "ca.pem").read_bytes(), cert.public_bytes(serialization.Encoding.PEM),
                   key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()))
    a = GrpcChannel("bank-a", addrs, "job", tls_files(good, "bank-a"), connect_timeout=5).start()
    mixed = GrpcChannel("bank-b", addrs, "job", tls, connect_timeout=5)
    with refused_send([a, mixed], mixed, "bank-a", "subject alternative names"):
        pass


def _two_institutions(tmp_path):
    """bank-a (listening) and a real and a fake bank-b: two institutions' CAs in one trust bundle, each
    party pinned to its own CA; bank-a's CA also mints the fake 'bank-b'."""
    ca_a = make_dev_pki(["bank-a", "bank-b"], tmp_path / "a", ca_name="Bank A CA")
    ca_b = make_dev_pki(["bank-b"], tmp_path / "b", ca_name="Bank B CA")
    bundle = (ca_a / "ca.pem").read_bytes() + (ca_b / "ca.pem").read_bytes()
    p1, p2 = free_ports(2)
    addrs = {"bank-a": f"127.0.0.1:{p1}", "bank-b": f"127.0.0.1:{p2}"}
    pins = {"bank-a": (ca_a / "ca.pem").read_bytes(), "bank-b": (ca_b / "ca.pem").read_bytes()}

    def files(folder, name):
        t = tls_files(folder, name)
        return type(t)(bundle, t.cert, t.key)

    a = GrpcChannel("bank-a", addrs, "job", files(ca_a, "bank-a"), connect_timeout=5, peer_cas=pins).start()
    real_b = GrpcChannel("bank-b", addrs, "job", files(ca_b, "bank-b"), connect_timeout=5, peer_cas=pins)
    fake_b = GrpcChannel("bank-b", addrs, "job", files(ca_a, "bank-b"), connect_timeout=5, peer_cas=pins)
    return a, real_b, fake_b


def test_pinned_party_ca_refuses_a_certificate_for_that_name_from_another_ca(tmp_path):
    """Two institutions' CAs in one trust bundle: bank-a's CA must not be able to mint 'bank-b'."""
    a, real_b, fake_b = _two_institutions(tmp_path)
    try:
        real_b.send("bank-a", "t.x", 1, kind="metric")
        assert a.recv("bank-b", "t.x", timeout=5) == 1
        with pytest.raises(TransportError, match="not issued by bank-b's own CA"):
            fake_b.send("bank-a", "t.x", 2, kind="metric")
    finally:
        a.close()
        real_b.close()
        fake_b.close()


def test_a_senders_certificate_is_checked_once_and_a_foreign_one_is_refused_every_time(tmp_path):
    """The receiver works out who sent a frame once per client certificate (the pinned-CA signature
    check cost ~0.2 ms of every frame), and the remembered answer never lets another certificate in:
    a fake 'bank-b' from bank-a's CA is refused on every send, before and after the real one is known."""
    a, real_b, fake_b = _two_institutions(tmp_path)
    checks = []
    real_check = a._issued_by_pinned_ca
    a._issued_by_pinned_ca = lambda peer, auth: checks.append(peer) or real_check(peer, auth)
    try:
        with pytest.raises(TransportError, match="not issued by bank-b's own CA"):
            fake_b.send("bank-a", "t.x0", 0, kind="metric")
        for i in range(1, 4):
            real_b.send("bank-a", f"t.x{i}", i, kind="metric")
            assert a.recv("bank-b", f"t.x{i}", timeout=5) == i
        for i in range(4, 6):
            with pytest.raises(TransportError, match="not issued by bank-b's own CA"):
                fake_b.send("bank-a", f"t.x{i}", i, kind="metric")
        assert checks == ["bank-b", "bank-b"]  # one check per certificate, not one per frame
        assert sorted(a._senders.values()) == ["bank-b", "bank-b (certificate not issued by bank-b's own CA)"]
    finally:
        a.close()
        real_b.close()
        fake_b.close()


def test_a_port_another_server_holds_is_refused_not_shared(pki):
    """gRPC binds with SO_REUSEPORT by default on Linux: a second party (a stale run, a `fedrisk
    serve` of the same party, another job) on the same port would then share it and the kernel would
    hand each peer's connection to either process. The second server must fail with one line instead."""
    good, _, addrs = pki
    a = GrpcChannel("bank-a", addrs, "job", tls_files(good, "bank-a"), connect_timeout=5).start()
    twin = GrpcChannel("bank-a", addrs, "job2", tls_files(good, "bank-a"), connect_timeout=5, bind_grace=0.5)
    try:
        with pytest.raises(TransportError, match=r"cannot listen on 127\.0\.0\.1:\d+: another process is using that port"):
            twin.start()
    finally:
        twin.close()
        a.close()


def test_an_address_this_host_does_not_have_is_named(pki):
    good, _, addrs = pki
    port = addrs["bank-a"].rsplit(":", 1)[1]
    ch = GrpcChannel("bank-a", {**addrs, "bank-a": f"192.0.2.77:{port}"}, "job", tls_files(good, "bank-a"),
                     connect_timeout=5, bind_grace=0.5)
    try:
        with pytest.raises(TransportError, match="no network interface of this host has the address 192.0.2.77"):
            ch.start()
    finally:
        ch.close()
