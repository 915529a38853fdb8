"""
Graceful shutdown: on SIGTERM the server stops accepting connections, lets
the uploads under way finish for up to C{--drain-timeout} seconds, aborts
whatever remains (no object, no multipart upload left), lets the downloads
and listings open finish within the same timeout (counted from the
signal), and only then stops the S3 thread pool and exits.

twistd stops every service at once when the reactor is asked to stop; the
listeners close at that moment, and L{DrainService.stopService} returns a
Deferred that holds the shutdown until the drain is over.  Connections
already open are served meanwhile, but a new upload on them is refused.

An upload counts until its CLOSE has been answered, not only until it is
stored (L{twisted_s3sftp.sftp.upload.ActiveUploads.holdReply}); the open
connections are then closed (C{closeConnections}: a grace for clients to
end their sessions, then an SSH disconnect) before the shutdown goes on,
so that no reply is cut off by the reactor's own shutdown.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.application.service import Service
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.defer import TimeoutError as DeferredTimeout
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from ..sftp.upload import ActiveUploads

log = Logger()

#: Seconds given to S3 to abort the uploads left when the drain times out.
ABORT_TIMEOUT = 15.0

#: Seconds connections are given to close after the shutdown's SSH
#: disconnect (each is cut after five in any case).
CLOSE_TIMEOUT = 10.0


class DrainService(Service):
    """
    Runs the S3 thread pool, and drains uploads before stopping it.

    @ivar uploads: the server's uploads under way.
    @ivar clock: for the timeout.
    @ivar timeout: seconds running uploads are given to finish.
    @ivar pool: the thread pool boto3 runs on, stopped last.
    """

    def __init__(
        self,
        uploads: ActiveUploads,
        clock: IReactorTime,
        timeout: float,
        pool: ThreadPool,
        closeConnections: Callable[[], Deferred[None]] | None = None,
    ) -> None:
        self.uploads = uploads
        self.clock = clock
        self.timeout = timeout
        self.pool = pool
        self.closeConnections = closeConnections
        self._over = False
        self._waiting: list[Deferred[None]] = []

    def drained(self) -> Deferred[None]:
        """
        @return: a Deferred firing once the shutdown drain is over (never
            before the service is stopped).
        """
        if self._over:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._waiting.append(waiter)
        return waiter

    def startService(self) -> None:
        super().startService()
        self.pool.start()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return Deferred.fromCoroutine(self._drain())

    def _release(self) -> None:
        self._over = True
        waiting, self._waiting = self._waiting, []
        for waiter in waiting:
            waiter.callback(None)

    async def _drain(self) -> None:
        self.uploads.draining = True
        deadline = self.clock.seconds() + self.timeout
        try:
            running = len(self.uploads)
            if running:
                log.info(
                    "Shutting down: waiting up to {timeout:g} s for {count} upload(s)",
                    timeout=self.timeout,
                    count=running,
                )
                try:
                    await self.uploads.whenEmpty().addTimeout(self.timeout, self.clock)
                except DeferredTimeout:
                    await self._abortRemaining()
            log.info("Shutting down: no upload under way")
            await self._finishReads(deadline)
            if self.closeConnections is not None:
                try:
                    await self.closeConnections().addTimeout(CLOSE_TIMEOUT, self.clock)
                except DeferredTimeout:
                    log.warn("Shutting down: connections still open after the disconnect")
        finally:
            self.pool.stop()
            self._release()

    async def _finishReads(self, deadline: float) -> None:
        """
        Let the downloads and listings open finish, until C{deadline}
        (the drain timeout, counted from the signal); those still open
        then are cut by the disconnect.
        """
        reading = self.uploads.reads
        remaining = deadline - self.clock.seconds()
        if not reading or remaining <= 0:
            return
        log.info(
            "Shutting down: waiting up to {timeout:.3g} s for {count} download(s) or listing(s)",
            timeout=remaining,
            count=reading,
        )
        try:
            await self.uploads.whenReadsDone().addTimeout(remaining, self.clock)
        except DeferredTimeout:
            log.warn(
                "Shutting down: {count} download(s) or listing(s) still open are cut off",
                count=self.uploads.reads,
            )

    async def _abortRemaining(self) -> None:
        remaining = self.uploads.every()
        log.warn(
            "Shutting down: parking or aborting {count} upload(s) still running "
            "after {timeout:g} s",
            count=len(remaining),
            timeout=self.timeout,
        )
        aborts = gatherResults(
            [upload.park("server shutting down") for upload in remaining],
            consumeErrors=True,
        )
        try:
            await aborts.addTimeout(ABORT_TIMEOUT, self.clock)
        except Exception as e:
            log.error(
                "Shutting down: aborting uploads failed ({error}); a lifecycle "
                "rule or the orphan sweep must remove what is left",
                error=repr(e),
            )
