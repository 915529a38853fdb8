"""
Tests for L{twisted_s3sftp.ops.metrics}: the Prometheus metrics and the health
check.
"""

from __future__ import annotations

from prometheus_client import generate_latest
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from twisted_s3sftp.ops.audit import audit
from twisted_s3sftp.ops.metrics import (
    HEALTH_INTERVAL,
    HEALTH_STALE,
    Health,
    Metrics,
    MetricsService,
    _HealthResource,
)
from twisted_s3sftp.sftp.flow import MemoryLimit
from twisted_s3sftp.sftp.upload import ActiveUploads
from twisted_s3sftp.ssh.admission import Admission, Limits
from twisted_s3sftp.store.memory import MemoryObjectStore


def sample(metrics: Metrics, name: str) -> float:
    """
    @return: the value of one sample, by its full name and labels.
    """
    for line in generate_latest(metrics.registry).decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise KeyError(name)


class MetricsTests(SynchronousTestCase):
    """
    What the metrics count.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.admission = Admission(Limits(), self.clock.seconds)
        self.uploads = ActiveUploads()
        self.memory = MemoryLimit(1000)
        self.metrics = Metrics(self.admission, self.uploads, self.memory)

    def test_levels(self) -> None:
        """
        Sessions, unauthenticated and queued connections, uploads started
        and memory are read from the live objects at each scrape.
        """
        self.admission.admit("10.0.0.1")
        self.admission.admit("10.0.0.2")
        self.admission.loggedIn("10.0.0.2", "alice")
        # Its cap, then one waiting.
        for _ in range(self.admission.limits.perSourceStartups + 1):
            self.admission.admit("10.0.0.3", lambda: None)
        self.memory.tryReserve(300)
        self.uploads.started = 7
        self.assertEqual(sample(self.metrics, "s3sftp_sessions"), 1)
        self.assertEqual(
            sample(self.metrics, "s3sftp_unauthenticated_connections"),
            1 + self.admission.limits.perSourceStartups,
        )
        self.assertEqual(sample(self.metrics, "s3sftp_queued_connections"), 1)
        self.assertEqual(sample(self.metrics, "s3sftp_uploads_started_total"), 7)
        self.assertEqual(sample(self.metrics, "s3sftp_buffered_bytes"), 300)
        self.assertEqual(sample(self.metrics, "s3sftp_buffer_limit_bytes"), 1000)

    def test_auditEvents(self) -> None:
        """
        Logins, upload outcomes and bytes are counted from the audit trail.
        """
        from twisted.logger import globalLogPublisher

        globalLogPublisher.addObserver(self.metrics.observeEvent)
        self.addCleanup(globalLogPublisher.removeObserver, self.metrics.observeEvent)
        fields = dict(user="a", path="/p", bucket="b", key="k", parts=1, seconds=0.0)
        audit("login", outcome="success", user="a", source="s", fingerprint="f", method="m")
        audit("login", outcome="failure", user="a", source="s", fingerprint="f", method="m")
        audit("upload", outcome="stored", bytes=100, **fields)
        audit("upload", outcome="aborted", bytes=5, reason="gone", **fields)
        audit("download", user="a", path="/p", bucket="b", key="k", bytes=40, size=40, seconds=0.0)
        self.assertEqual(sample(self.metrics, 's3sftp_logins_total{outcome="success"}'), 1)
        self.assertEqual(sample(self.metrics, 's3sftp_logins_total{outcome="failure"}'), 1)
        self.assertEqual(sample(self.metrics, 's3sftp_uploads_total{outcome="stored"}'), 1)
        self.assertEqual(sample(self.metrics, 's3sftp_uploads_total{outcome="aborted"}'), 1)
        self.assertEqual(sample(self.metrics, "s3sftp_received_bytes_total"), 105)
        self.assertEqual(sample(self.metrics, "s3sftp_sent_bytes_total"), 40)

    def test_s3(self) -> None:
        """
        S3 calls are counted by operation and outcome, with latency.
        """
        self.metrics.observeS3("PutObject", "ok", 0.02)
        self.metrics.observeS3("PutObject", "error", 0.5)
        self.assertEqual(
            sample(self.metrics, 's3sftp_s3_requests_total{operation="PutObject",outcome="ok"}'), 1
        )
        self.assertEqual(
            sample(self.metrics, 's3sftp_s3_request_seconds_count{operation="PutObject"}'), 2
        )


class HealthTests(SynchronousTestCase):
    """
    C{/healthz}: 200 while logins are accepted and S3 answers.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.store = MemoryObjectStore()
        self.accepting = True
        self.health = Health(self.store, "homes/", self.clock, lambda: self.accepting)

    def code(self) -> int:
        """
        @return: the status code C{/healthz} answers now.
        """
        request = DummyRequest([b""])
        _HealthResource(self.health).render_GET(request)
        return request.responseCode or 200

    def test_states(self) -> None:
        """
        503 before the first S3 check, 200 after a good one, 503 after a
        failed one has made the last good one stale, and 503 while
        shutting down.
        """
        self.assertEqual(self.code(), 503)
        self.successResultOf(self.health.check())
        self.assertEqual(self.code(), 200)
        self.assertIn("listDirectory", self.store.calls)
        self.store.failNext("listDirectory")
        self.successResultOf(self.health.check())
        self.assertEqual(self.code(), 200)
        self.clock.advance(HEALTH_STALE + 1)
        self.assertEqual(self.code(), 503)
        self.successResultOf(self.health.check())
        self.accepting = False
        self.assertEqual(self.code(), 503)
        self.flushLoggedErrors()

    def test_service(self) -> None:
        """
        The service listens on its endpoint, checks S3 every
        L{HEALTH_INTERVAL} seconds, and stops listening only once the
        drain is over.
        """
        from twisted.internet.defer import Deferred

        reactor = MemoryReactorClock()
        health = Health(self.store, "", reactor, lambda: True)
        metrics = Metrics(Admission(Limits(), reactor.seconds), ActiveUploads(), MemoryLimit(1))
        drained: Deferred[None] = Deferred()
        service = MetricsService(reactor, "tcp:9100", metrics, health, lambda: drained)
        service.startService()
        self.assertEqual(reactor.tcpServers[0][0], 9100)
        self.assertEqual(self.store.calls.count("listDirectory"), 1)
        reactor.advance(HEALTH_INTERVAL)
        self.assertEqual(self.store.calls.count("listDirectory"), 2)
        stopping = service.stopService()
        self.assertNoResult(stopping)
        drained.callback(None)
        self.successResultOf(stopping)
