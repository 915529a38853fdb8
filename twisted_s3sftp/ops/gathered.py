"""
The parent's C{/metrics} and C{/healthz} with C{--workers N}, gathered
from its workers at each request.

Each worker serves its own C{/metrics} and C{/healthz} on the abstract
Unix socket its parent made for it (L{twisted_s3sftp.ops.workers.metricsListener});
the parent asks every worker that is up, each within L{FETCH_TIMEOUT} seconds, and answers:

  - C{/metrics}: the workers' metrics summed (L{twisted_s3sftp.ops.merge}:
    the same names and labels as one server's), with
    C{s3sftp_workers} (workers taking connections) and
    C{s3sftp_worker_restarts_total} (workers started again after dying);
  - C{/healthz}: C{200} when at least one worker is up and every worker up
    says C{200}; C{503} with each worker's answer otherwise, and from the
    moment the shutdown begins.

A worker that does not answer in time is left out of that C{/metrics}
and counts as unhealthy in C{/healthz}.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from .listener import listeningService
from .merge import Gathered
from .workers import Worker, Workers

log = Logger()

#: Seconds a worker has to answer the parent.
FETCH_TIMEOUT = 5.0

#: The largest answer read from a worker.
MAX_ANSWER = 16 << 20


class _Answer(Protocol):
    """
    Reads a worker's whole HTTP/1.0 answer (it closes the connection
    after it).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.received: list[bytes] = []
        self.size = 0
        self.done: Deferred[tuple[int, str]] = Deferred()

    def connectionMade(self) -> None:
        cast(Any, self.transport).write(
            f"GET {self.path} HTTP/1.0\r\nHost: worker\r\n\r\n".encode()
        )

    def dataReceived(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > MAX_ANSWER:
            cast(Any, self.transport).abortConnection()
            return
        self.received.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        head, _, body = b"".join(self.received).partition(b"\r\n\r\n")
        status = head.split(b"\r\n", 1)[0].split()
        # Only a whole answer: one cut short (by the timeout, say) would
        # be a partial page.
        whole = reason.check(ConnectionDone) is not None
        if not whole or self.size > MAX_ANSWER or len(status) < 2 or not status[1].isdigit():
            self.done.errback(ValueError(f"no whole HTTP answer to {self.path}"))
        else:
            self.done.callback((int(status[1]), body.decode("utf-8", "replace")))


class _Asking(Factory):
    """
    Connects one L{_Answer}, without a log line for it.
    """

    noisy = False

    def __init__(self, answer: _Answer) -> None:
        self.answer = answer

    def buildProtocol(self, addr: Any) -> _Answer:
        return self.answer


class Gatherer:
    """
    Asks the workers for their metrics and health.

    @ivar workers: the parent's workers.
    @ivar gathered: the sums, with the retired workers' counters.
    """

    def __init__(self, reactor: Any, workers: Workers) -> None:
        self.reactor = reactor
        self.workers = workers
        self.gathered = Gathered()
        workers.onWorkerGone = self._retire

    def _retire(self, worker: Worker) -> None:
        if worker.lastMetrics:
            self.gathered.retire(worker.lastMetrics)

    async def _fetch(self, worker: Worker, path: str) -> tuple[int, str]:
        assert worker.metricsSocket is not None
        answer = _Answer(path)
        endpoint = UNIXClientEndpoint(self.reactor, worker.metricsSocket, timeout=FETCH_TIMEOUT)
        protocol = await endpoint.connect(_Asking(answer))
        transport = cast(Any, protocol.transport)
        timeout = self.reactor.callLater(FETCH_TIMEOUT, transport.abortConnection)
        try:
            return await answer.done
        finally:
            if timeout.active():
                timeout.cancel()

    async def _fetchAll(self, path: str) -> list[tuple[Worker, tuple[int, str] | None]]:
        ready = self.workers.ready()
        results = await DeferredList(
            [Deferred.fromCoroutine(self._fetch(worker, path)) for worker in ready],
            consumeErrors=True,
        )
        answers: list[tuple[Worker, tuple[int, str] | None]] = []
        for worker, (ok, result) in zip(ready, results, strict=True):
            if not ok:
                log.warn(
                    "Worker {index} did not answer {path}: {error}",
                    index=worker.index,
                    path=path,
                    error=cast(Failure, result).getErrorMessage(),
                )
            answers.append((worker, result if ok else None))
        return answers

    async def metrics(self) -> bytes:
        """
        @return: the C{/metrics} page.
        """
        texts = []
        for worker, answer in await self._fetchAll("/metrics"):
            if answer is not None and answer[0] == 200:
                if self.workers.workers.get(worker.index) is worker:
                    # Still running: what it would leave if it died now.
                    worker.lastMetrics = answer[1]
                    texts.append(answer[1])
        families = self.gathered.merge(texts)
        registry = CollectorRegistry()
        registry.register(_Fixed(families + self._own()))
        return generate_latest(registry)

    def _own(self) -> list[Metric]:
        return [
            GaugeMetricFamily(
                "s3sftp_workers",
                "Worker processes taking connections.",
                value=len(self.workers.ready()),
            ),
            CounterMetricFamily(
                "s3sftp_worker_restarts",
                "Worker processes started again after dying.",
                value=self.workers.restarts,
            ),
        ]

    async def health(self) -> tuple[bool, str]:
        """
        @return: whether the server is healthy, and what each worker said.
        """
        if self.workers.stopping:
            return False, "shutting down"
        answers = await self._fetchAll("/healthz")
        if not answers:
            return False, "no worker is running"
        lines = []
        healthy = True
        for worker, answer in answers:
            if answer is None:
                healthy = False
                lines.append(f"worker {worker.index}: no answer")
            else:
                healthy = healthy and answer[0] == 200
                lines.append(f"worker {worker.index}: {answer[1].strip()}")
        summary = f"ok: {len(answers)} workers" if healthy else "unhealthy"
        return healthy, "\n".join([summary, *lines])


class _Fixed:
    """
    A collector of families already made.
    """

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


class _Page(Resource):
    isLeaf = True

    def __init__(self, gatherer: Gatherer, health: bool) -> None:
        super().__init__()
        self.gatherer = gatherer
        self.health = health

    def render_GET(self, request: Request) -> object:
        gone = [False]
        request.notifyFinish().addBoth(lambda _: gone.__setitem__(0, True))

        def answer(page: tuple[int, bytes, bytes]) -> None:
            code, contentType, body = page
            if not gone[0]:
                request.setResponseCode(code)
                request.setHeader(b"content-type", contentType)
                request.write(body)
                request.finish()

        def failed(failure: Any) -> tuple[int, bytes, bytes]:
            log.failure("Gathering the workers' {path} failed", failure, path=request.path)
            return 500, b"text/plain", b"internal error\n"

        Deferred.fromCoroutine(self._page()).addErrback(failed).addCallback(answer)
        return NOT_DONE_YET

    async def _page(self) -> tuple[int, bytes, bytes]:
        if self.health:
            healthy, why = await self.gatherer.health()
            text = b"text/plain; charset=utf-8"
            return 200 if healthy else 503, text, why.encode("utf-8") + b"\n"
        return 200, CONTENT_TYPE_LATEST.encode("ascii"), await self.gatherer.metrics()


class GatheredMetricsService(Service):
    """
    The parent's C{--metrics} endpoint, kept up until every worker has
    stopped (so that load balancers see C{/healthz} answer C{503} while
    the workers drain).
    """

    def __init__(self, reactor: Any, description: str, workers: Workers) -> None:
        self.gatherer = Gatherer(reactor, workers)
        self.workers = workers
        root = Resource()
        root.putChild(b"metrics", _Page(self.gatherer, health=False))
        root.putChild(b"healthz", _Page(self.gatherer, health=True))
        self.site = Site(root)
        self.site.noisy = False
        self._listener = listeningService(reactor, description, self.site, "metrics")

    def startService(self) -> None:
        super().startService()
        self._listener.startService()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        await self.workers.whenStopped()
        await self._listener.stopService()
