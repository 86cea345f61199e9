"""What the scoring service's router refuses, and with which gRPC status (no processes, no network).

The end-to-end test (test_scoring_service.py) covers sessions that are served; here each refusal
of :meth:`ScoringService.route` is driven with a crafted frame and a stand-in for gRPC's servicer
context carrying a real client certificate.
"""
from __future__ import annotations

import threading

import grpc
import pytest

from fedrisk.runtime.scoring_service import ScoringService, _Session
from fedrisk.transport.certs import make_dev_pki
from fedrisk.transport.codec import encode


class Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code, self.details = code, details


class Context:
    def __init__(self, cert_pem: bytes) -> None:
        self.cert_pem = cert_pem

    def auth_context(self):
        return {"x509_pem_cert": [self.cert_pem]}

    def abort(self, code, details):
        raise Aborted(code, details)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    make_dev_pki(["lender", "payco", "bureau"], d)
    return {n: (d / f"{n}.pem").read_bytes() for n in ("lender", "bureau")}


def service(max_sessions: int = 2) -> ScoringService:
    svc = object.__new__(ScoringService)  # the router's state only: no model, data or server
    svc.name, svc.label_holder, svc.model = "payco", "lender", {"job": "credit", "format": "fedrisk.vertical.lr.part"}
    svc.prefix, svc.max_sessions = "credit.predict.", max_sessions
    svc.sessions, svc.finished = {}, {"monday": "done", "tuesday": "failed: payco.csv: /srv/data/x"}
    svc.draining, svc._lock, svc.front = threading.Event(), threading.Lock(), None
    return svc


def frame(job: str, sender: str = "lender") -> bytes:
    return encode(job, sender, "payco", "ctl.open", "control", {"session": job.rsplit(".", 1)[-1]})


def refusal(svc: ScoringService, data: bytes, cert: bytes) -> Aborted:
    with pytest.raises(Aborted) as e:
        svc.route(data, Context(cert))
    return e.value


def test_router_refuses_what_is_not_a_new_session_of_its_model_from_its_label_holder(certs):
    svc = service()
    e = refusal(svc, b"GET / HTTP/1.1\r\n\r\n", certs["lender"])
    assert e.code == grpc.StatusCode.INVALID_ARGUMENT and "not a fedrisk frame" in e.details
    e = refusal(svc, frame("other-model.predict.s1"), certs["lender"])
    assert e.code == grpc.StatusCode.PERMISSION_DENIED and "serves model job 'credit'" in e.details
    e = refusal(svc, frame("credit.predict.monday"), certs["lender"])
    assert e.code == grpc.StatusCode.FAILED_PRECONDITION and "already served" in e.details
    e = refusal(svc, frame("credit.predict.tuesday"), certs["lender"])
    assert "(failed)" in e.details and "/srv" not in e.details, "no local detail crosses to the partner"
    e = refusal(svc, frame("credit.predict.s1", sender="bureau"), certs["bureau"])
    assert e.code == grpc.StatusCode.PERMISSION_DENIED and "only the label holder 'lender'" in e.details
    e = refusal(svc, frame("credit.predict." + "x" * 40), certs["lender"])
    assert e.code == grpc.StatusCode.INVALID_ARGUMENT and "session name" in e.details
    assert not svc.sessions, "no refused frame may open a session"


def test_router_says_busy_at_the_session_limit_and_unavailable_while_draining(certs):
    svc = service(max_sessions=1)
    svc.sessions["running"] = _Session("running", channel=None)  # type: ignore[arg-type]
    e = refusal(svc, frame("credit.predict.s2"), certs["lender"])
    assert e.code == grpc.StatusCode.RESOURCE_EXHAUSTED and "retry later" in e.details
    svc.draining.set()
    e = refusal(svc, frame("credit.predict.s3"), certs["lender"])
    assert e.code == grpc.StatusCode.UNAVAILABLE and "shutting down" in e.details
    assert set(svc.sessions) == {"running"}


def test_status_shows_a_served_column_blank_in_every_row():
    """A feature holder's data feed that lost a column is scored as the missing bin: its health status says so."""
    import numpy as np

    from fedrisk.tasks.vertical_scorecard import RawRows

    svc = service()
    svc.started = 0.0
    note = "party 'payco': feature column ['purpose'] is blank in all 200 rows scored; ..."
    svc._table = RawRows(np.arange(2), np.empty((2, 1), dtype=object), ["purpose"], (note,))
    assert svc.status()["data_warnings"] == [note]
    svc._table = RawRows(np.arange(2), np.empty((2, 1), dtype=object), ["purpose"])
    assert svc.status()["data_warnings"] == []
