"""
Prometheus metrics and the health check, served over HTTP with
C{--metrics ENDPOINT} (e.g. C{tcp:9100:interface=127.0.0.1}):

  - C{/metrics}: the metrics below, in Prometheus' text format;
  - C{/healthz}: C{200} while the server accepts logins and S3 answers,
    C{503} otherwise (for load balancers).

C{/healthz} answers until the shutdown drain is over (L{twisted_s3sftp.ops.drain}),
with C{503} from the moment it begins.

Metrics (all prefixed C{s3sftp_}):

  - C{sessions}, C{unauthenticated_connections}, C{queued_connections}:
    connections now logged in, being served before login, and waiting for
    a slot in the admission queue;
  - C{logins_total{outcome}}: login attempts, C{success} or C{failure};
  - C{uploads_started_total}, C{uploads_total{outcome}}: uploads opened, and
    ended C{stored}, C{parked}, C{failed}, C{aborted} or C{taken over};
  - C{received_bytes_total}, C{sent_bytes_total}: file data received in
    uploads and sent in downloads, counted when each transfer ends;
  - C{buffered_bytes}, C{buffer_limit_bytes}: memory reserved by uploads
    and downloads, against C{--memory-limit};
  - C{s3_requests_total{operation,outcome}} and
    C{s3_request_seconds{operation}}: every S3 call, C{ok} or C{error},
    with a latency histogram.

Counts of things that end (logins, uploads, bytes) come from the audit
trail (L{twisted_s3sftp.ops.audit}), so the log and the metrics cannot
disagree; levels (sessions, memory) are read from the live objects when
Prometheus scrapes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, cast

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime, IStreamServerEndpoint
from twisted.internet.task import LoopingCall
from twisted.logger import ILogObserver, Logger, globalLogPublisher
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from ..sftp.flow import MemoryLimit
from ..sftp.upload import ActiveUploads
from ..ssh.admission import Admission
from ..store.interfaces import IObjectStore
from .listener import listeningService

log = Logger()

#: Seconds between two S3 checks for C{/healthz}.
HEALTH_INTERVAL = 10.0

#: Seconds after which the last good S3 check no longer counts.
HEALTH_STALE = 35.0


class Metrics:
    """
    The server's metrics, in a registry of their own.

    @ivar registry: what C{/metrics} serves.
    """

    def __init__(
        self,
        admission: Admission,
        uploads: ActiveUploads,
        memory: MemoryLimit,
    ) -> None:
        self.registry = CollectorRegistry()
        self._admission = admission
        self._uploads = uploads
        self._memory = memory
        self.logins = Counter(
            "s3sftp_logins", "Login attempts by outcome.", ["outcome"], registry=self.registry
        )
        self.uploadOutcomes = Counter(
            "s3sftp_uploads", "Uploads ended, by outcome.", ["outcome"], registry=self.registry
        )
        self.received = Counter(
            "s3sftp_received_bytes", "File data received in uploads.", registry=self.registry
        )
        self.sent = Counter(
            "s3sftp_sent_bytes", "File data sent in downloads.", registry=self.registry
        )
        self.s3Requests = Counter(
            "s3sftp_s3_requests",
            "S3 requests by operation and outcome.",
            ["operation", "outcome"],
            registry=self.registry,
        )
        self.s3Seconds = Histogram(
            "s3sftp_s3_request_seconds",
            "S3 request latency.",
            ["operation"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.registry.register(_Levels(self))

    def observeS3(self, operation: str, outcome: str, seconds: float) -> None:
        """
        Count one S3 call (called from the thread that made it).
        """
        self.s3Requests.labels(operation, outcome).inc()
        self.s3Seconds.labels(operation).observe(seconds)

    def observeEvent(self, event: dict[str, Any]) -> None:
        """
        A log observer: count the audit trail's logins, uploads and bytes.
        """
        kind = event.get("audit")
        if kind == "login":
            self.logins.labels(event["outcome"]).inc()
        elif kind == "upload":
            self.uploadOutcomes.labels(event["outcome"]).inc()
            self.received.inc(event.get("bytes", 0))
        elif kind == "download":
            self.sent.inc(event.get("bytes", 0))


class _Levels:
    """
    The metrics read from live objects at each scrape.
    """

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Any]:
        metrics = self.metrics
        for family, name, documentation, value in [
            (GaugeMetricFamily, "sessions", "Logged-in connections.", metrics._admission.sessions),
            (
                GaugeMetricFamily,
                "unauthenticated_connections",
                "Connections not logged in yet.",
                metrics._admission.unauthenticated,
            ),
            (
                GaugeMetricFamily,
                "queued_connections",
                "Connections waiting for a slot to log in.",
                metrics._admission.queued,
            ),
            (CounterMetricFamily, "uploads_started", "Uploads opened.", metrics._uploads.started),
            (
                GaugeMetricFamily,
                "buffered_bytes",
                "Memory reserved by uploads and downloads.",
                metrics._memory.used,
            ),
            (
                GaugeMetricFamily,
                "buffer_limit_bytes",
                "The memory limit (--memory-limit).",
                metrics._memory.limit,
            ),
        ]:
            yield family(f"s3sftp_{name}", documentation, value=value)


class Health:
    """
    Whether a load balancer should send this server logins.

    @ivar store: checked every L{HEALTH_INTERVAL} seconds with a one-key
        listing of C{prefix}.
    @ivar prefix: where the listing looks (the fixed part of the homes).
    @ivar clock: the time source.
    @ivar accepting: whether logins are accepted (not shutting down).
    """

    def __init__(
        self,
        store: IObjectStore,
        prefix: str,
        clock: IReactorTime,
        accepting: Callable[[], bool],
    ) -> None:
        self.store = store
        self.prefix = prefix
        self.clock = clock
        self.accepting = accepting
        self.lastGood: float | None = None
        self.problem = "S3 not checked yet"

    def check(self) -> Deferred[None]:
        """
        Check S3 once.
        """
        return Deferred.fromCoroutine(self._check())

    async def _check(self) -> None:
        try:
            await self.store.listDirectory(self.prefix, 1)
        except Exception as e:
            self.problem = f"S3 does not answer: {getattr(e, 'message', None) or e!r}"
            log.warn("Health check: {problem}", problem=self.problem)
        else:
            self.lastGood = self.clock.seconds()
            self.problem = ""

    def status(self) -> tuple[bool, str]:
        """
        @return: whether the server is healthy, and why not.
        """
        if not self.accepting():
            return False, "shutting down"
        if self.lastGood is None or self.clock.seconds() - self.lastGood > HEALTH_STALE:
            return False, self.problem or "S3 check is stale"
        return True, "ok"


class _HealthResource(Resource):
    isLeaf = True

    def __init__(self, health: Health) -> None:
        super().__init__()
        self.health = health

    def render_GET(self, request: Request) -> bytes:
        healthy, why = self.health.status()
        request.setResponseCode(200 if healthy else 503)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return why.encode("utf-8") + b"\n"


class _MetricsResource(Resource):
    """
    C{/metrics}, rendered in the reactor thread (prometheus_client's own
    resource goes through WSGI, which wants a client with an IP address:
    a worker's parent asks over a Unix socket).
    """

    isLeaf = True

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self.registry = registry

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode("ascii"))
        return generate_latest(self.registry)


class MetricsService(Service):
    """
    The HTTP endpoint for C{/metrics} and C{/healthz}, and the periodic S3
    check behind C{/healthz}.
    """

    def __init__(
        self,
        reactor: Any,
        description: str,
        metrics: Metrics,
        health: Health,
        drained: Callable[[], Deferred[None]] | None = None,
        accessLog: bool = True,
        endpoint: IStreamServerEndpoint | None = None,
    ) -> None:
        root = Resource()
        root.putChild(b"metrics", _MetricsResource(metrics.registry))
        root.putChild(b"healthz", _HealthResource(health))
        self.site = Site(root)
        self.site.noisy = False
        if not accessLog:
            # A worker's, asked by its parent at each of its requests.
            self.site.log = lambda request: None  # type: ignore[method-assign]
        self.health = health
        self.metrics = metrics
        self.drained = drained
        self._listener = listeningService(reactor, description, self.site, "metrics", endpoint)
        self._checks = LoopingCall(health.check)
        self._checks.clock = health.clock

    def startService(self) -> None:
        super().startService()
        globalLogPublisher.addObserver(cast(ILogObserver, self.metrics.observeEvent))
        self._listener.startService()
        self._checks.start(HEALTH_INTERVAL, now=True)

    def stopService(self) -> Deferred[None]:
        # Kept up while the server drains, so that load balancers see
        # /healthz answer 503 rather than nothing.
        super().stopService()
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        if self.drained is not None:
            await self.drained()
        if self._checks.running:
            self._checks.stop()
        globalLogPublisher.removeObserver(cast(ILogObserver, self.metrics.observeEvent))
        await self._listener.stopService()
