"""
C{--workers N}: one parent process and N worker processes serving the
same listening endpoints, so that every core serves.

The parent (L{Workers}):

  - binds every C{--listen} endpoint, and accepts the connections itself,
    handing each to the next worker that is up
    (L{twisted_s3sftp.ops.handoff}, which says why); it begins once every
    worker is ready (or after L{STARTUP_WAIT} seconds), so that a burst
    at start-up is spread too;
  - starts the workers, each a C{twistd s3sftp} with the same options and
    a channel to the parent (C{--worker-channel}), and starts again one
    that dies, after a back-off (L{restartDelay}) that grows while
    workers die young;
  - relays their logs: each worker writes Twisted's JSON log events to
    the parent, which publishes them as its own, with C{worker} (its
    number) added and C{worker N} at the head of their system; the
    parent's C{--log-format} and C{--logfile} then apply to every line;
  - on SIGTERM stops accepting and passes SIGTERM on to every worker,
    each of which drains as one server does (C{--drain-timeout}), and
    exits when the last has; one that outlives its drain by
    L{STOP_GRACE} seconds is killed;
  - serves C{/metrics} and C{/healthz} for all of them on the one
    C{--metrics} endpoint (L{twisted_s3sftp.ops.gathered}); each worker
    serves its own to the parent only, on a listening Unix socket the
    parent made for it and hands it as descriptor L{METRICS_FD}
    (L{metricsListener}): in Linux's abstract namespace, so no file is
    made anywhere.

A worker killed with SIGKILL loses its connections; its uploads are left
as a crashed server leaves them: no object is created, and each upload is
resumable from its lease's last checkpoint once the lease is stale
(three C{--lease-interval}s), or aborted by the sweep after
C{--orphan-age}.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from typing import Any

from attrs import define
from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import Factory, ProcessProtocol, Protocol
from twisted.logger import Logger, eventFromJSON, formatEvent, globalLogPublisher
from twisted.python.failure import Failure

from .drain import ABORT_TIMEOUT, CLOSE_TIMEOUT
from .handoff import Channel, Distributor, channelPair
from .listener import AnnouncedEndpoint

log = Logger()

#: The worker's descriptor for its channel to the parent.
CHANNEL_FD = 3

#: The worker's descriptor for the listening socket it serves its metrics
#: on, to the parent.
METRICS_FD = 4

#: Seconds a worker must have run for its death not to count as young.
STABLE_AFTER = 30.0

#: The longest wait before starting a worker again.
MAX_RESTART_DELAY = 30.0

#: Seconds a worker is given beyond its drain before it is killed.
STOP_GRACE = 15.0

#: The longest the parent holds connections back at start-up, waiting for
#: every worker to be ready.
STARTUP_WAIT = 15.0

#: The longest log line relayed whole from a worker.
MAX_LINE = 1 << 20


def restartDelay(youngDeaths: int) -> float:
    """
    @param youngDeaths: how many workers in that place in a row died
        within L{STABLE_AFTER} seconds of starting (this one included).
    @return: seconds to wait before starting it again: none after a
        worker that had run a while, then 1, 2, 4 ... up to
        L{MAX_RESTART_DELAY}.
    """
    if youngDeaths <= 0:
        return 0.0
    return float(min(MAX_RESTART_DELAY, 2 ** (youngDeaths - 1)))


def metricsListener(index: int) -> tuple[socket.socket, str]:
    """
    @return: a listening Unix socket for worker C{index}'s metrics, and
        its address: in Linux's abstract namespace (no file), with a random
        part so that its name cannot be guessed.
    """
    address = f"\0s3sftp-{os.getpid()}-{index}-{secrets.token_hex(8)}"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(address)
        listener.listen(16)
    except OSError:
        listener.close()
        raise
    return listener, address


def workerCommand(arguments: Sequence[str], index: int, withMetrics: bool) -> list[str]:
    """
    @param arguments: the parent's own C{s3sftp} arguments.
    @param index: the worker's number.
    @param withMetrics: whether the worker serves its metrics to the
        parent, on descriptor L{METRICS_FD}.
    @return: the command line of a worker: this Python, running twistd in
        the foreground, with the same options and its channel.
    """
    command = [
        sys.executable,
        # Not the working directory first on the module path, as -c would.
        "-P",
        "-c",
        "from twisted.scripts.twistd import run; run()",
        "--nodaemon",
        "--pidfile=",
        "s3sftp",
        *arguments,
        f"--worker-index={index}",
        f"--worker-channel={CHANNEL_FD}",
    ]
    if withMetrics:
        command.append(f"--worker-metrics-fd={METRICS_FD}")
    return command


class _WorkerProtocol(ProcessProtocol):
    """
    One worker process: its log lines are relayed, its end reported.
    """

    def __init__(self, workers: Workers, index: int) -> None:
        self.workers = workers
        self.index = index
        self._pending = {1: b"", 2: b""}

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        pending = self._pending.get(childFD, b"") + data
        *lines, rest = pending.split(b"\n")
        if len(rest) > MAX_LINE:
            lines.append(rest)
            rest = b""
        self._pending[childFD] = rest
        for line in lines:
            self._relay(childFD, line)

    def _relay(self, childFD: int, line: bytes) -> None:
        text = line.decode("utf-8", "replace").strip().lstrip("\x1e")
        if not text:
            return
        event: dict[str, Any] | None = None
        if childFD == 1:
            try:
                event = eventFromJSON(text)
            except ValueError:
                event = None
        if not isinstance(event, dict):
            # Written before its log began (an import error, say).
            log.warn("{line}", line=text, worker=self.index, log_system=f"worker {self.index}")
            return
        text = formatEvent(event)
        if "\0" in text:
            # Twisted names an abstract Unix socket (the worker's metrics)
            # raw; written as tools show it (@name), not as a NUL byte.
            event.pop("log_flattened", None)
            event["log_format"] = "{_relayed}"
            event["_relayed"] = text.replace("\0", "@")
        system = event.get("log_system")
        event["worker"] = self.index
        event["log_system"] = f"worker {self.index}" + (
            f" {system}" if system and system != "-" else ""
        )
        globalLogPublisher(event)

    def processEnded(self, reason: Failure) -> None:
        for childFD in (1, 2):
            if self._pending[childFD]:
                self._relay(childFD, self._pending[childFD])
        self.workers.ended(self.index, reason)


@define(eq=False)
class Worker:
    """
    A worker process the parent runs.

    @ivar index: its number, from 1.
    @ivar process: its process transport.
    @ivar channel: the parent's end of its channel.
    @ivar startedAt: when it started.
    @ivar pid: its process id.
    @ivar metricsSocket: the address it serves its metrics on, or L{None}.
    @ivar lastMetrics: its metrics when the parent last asked.
    """

    index: int
    process: Any
    channel: Channel
    startedAt: float
    pid: int
    metricsSocket: str | None = None
    lastMetrics: str = ""

    @property
    def ready(self) -> bool:
        """
        Whether it takes connections.
        """
        return self.channel.ready


class Workers(Service):
    """
    The parent of C{--workers N}.

    @ivar reactor: spawns the processes, reads the sockets, times the
        restarts.
    @ivar count: how many workers to run.
    @ivar arguments: the C{s3sftp} arguments each worker is given.
    @ivar listen: the C{--listen} endpoints.
    @ivar drainTimeout: the workers' C{--drain-timeout}.
    @ivar withMetrics: whether the workers serve metrics to the parent.
    @ivar commandFor: makes a worker's command line (L{workerCommand}).
    @ivar onWorkerGone: called with each worker that has ended.
    @ivar workers: the workers running, by number.
    @ivar restarts: how many workers were started again after dying.
    @ivar stopping: whether the shutdown has begun.
    @ivar distributor: hands the connections out.
    """

    def __init__(
        self,
        reactor: Any,
        count: int,
        arguments: Sequence[str],
        listen: Sequence[str],
        drainTimeout: float,
        withMetrics: bool = False,
        commandFor: Callable[[Sequence[str], int, bool], list[str]] = workerCommand,
    ) -> None:
        self.reactor = reactor
        self.count = count
        self.arguments = arguments
        self.listen = listen
        self.drainTimeout = drainTimeout
        self.withMetrics = withMetrics
        self.commandFor = commandFor
        self.onWorkerGone: Callable[[Worker], None] = lambda worker: None
        self.workers: dict[int, Worker] = {}
        self.restarts = 0
        self.stopping = False
        self.distributor = Distributor(reactor)
        self._youngDeaths: dict[int, int] = {}
        self._pendingStarts: dict[int, IDelayedCall] = {}
        self._allEnded: list[Deferred[None]] = []
        self._ports: list[Any] = []
        self._startupWait: IDelayedCall | None = None

    def privilegedStartService(self) -> None:
        # Bound before twistd gives up root (--uid), as one server's
        # listeners are: a port below 1024 works the same.
        super().privilegedStartService()
        self._ports = [self._bind(description) for description in self.listen]

    def startService(self) -> None:
        super().startService()
        if not self._ports:
            # Started without twistd's privileged step (as a service added
            # to one already running is).
            self.privilegedStartService()
        # Until every worker is ready (or STARTUP_WAIT), connections wait
        # in the backlog: the first worker up would otherwise take a burst
        # that comes in at start-up whole.
        self.distributor.hold(True)
        self._startupWait = self.reactor.callLater(STARTUP_WAIT, self._allReady)
        self.distributor.listen(self._ports)
        log.info("Starting {count} workers", count=self.count)
        for index in range(1, self.count + 1):
            self._start(index)

    def _bind(self, description: str) -> Any:
        """
        @return: the port listening on C{description}, bound now (an
            address in use stops the start).
        """
        endpoint = AnnouncedEndpoint(
            serverFromString(self.reactor, description), description, "s3sftp"
        )
        outcome: list[Any] = []
        # Never used: the distributor takes the port's socket at once.
        unused = Factory.forProtocol(Protocol)
        unused.noisy = False
        endpoint.listen(unused).addBoth(outcome.append)
        if isinstance(outcome[0], Failure):
            outcome[0].raiseException()
        return outcome[0]

    def _start(self, index: int) -> None:
        self._pendingStarts.pop(index, None)
        parentEnd, workerEnd = channelPair()
        childFDs: dict[int, int | str] = {0: "w", 1: "r", 2: "r", CHANNEL_FD: workerEnd.fileno()}
        listener, metricsSocket = None, None
        if self.withMetrics:
            # The worker's copy listens; the parent's is closed below.
            listener, metricsSocket = metricsListener(index)
            childFDs[METRICS_FD] = listener.fileno()
        channel = Channel(index, parentEnd, lambda: self.distributor.remove(channel))
        command = self.commandFor(self.arguments, index, self.withMetrics)
        try:
            process = self.reactor.spawnProcess(
                _WorkerProtocol(self, index),
                command[0],
                command,
                env=dict(os.environ),
                path=os.getcwd(),
                childFDs=childFDs,
            )
        except OSError as e:
            parentEnd.close()
            log.error("Worker {index} could not be started: {error}", index=index, error=e)
            self._restartLater(index)
            return
        except BaseException:
            parentEnd.close()
            raise
        finally:
            workerEnd.close()
            if listener is not None:
                listener.close()
        process.closeStdin()
        self.workers[index] = Worker(
            index, process, channel, self.reactor.seconds(), process.pid, metricsSocket
        )
        self.distributor.add(channel)
        channel.onReady = self._readyChanged
        log.info("Worker {index} started (pid {pid})", index=index, pid=process.pid)

    def _readyChanged(self) -> None:
        if self._startupWait is not None and len(self.ready()) == self.count:
            self._startupWait.cancel()
            self._allReady()
        self.distributor.update()

    def _allReady(self) -> None:
        self._startupWait = None
        log.info(
            "{ready} of {count} workers ready: accepting connections",
            ready=len(self.ready()),
            count=self.count,
        )
        self.distributor.hold(False)

    def ended(self, index: int, reason: Failure) -> None:
        """
        Worker C{index}'s process has ended.
        """
        worker = self.workers.pop(index, None)
        if worker is None:
            return
        self.distributor.remove(worker.channel)
        worker.channel.close()
        self.onWorkerGone(worker)
        status = getattr(reason.value, "exitCode", None)
        if self.stopping:
            log.info("Worker {index} (pid {pid}) has stopped", index=index, pid=worker.pid)
            self._releaseIfStopped()
            return
        lived = self.reactor.seconds() - worker.startedAt
        young = self._youngDeaths.get(index, 0) + 1 if lived < STABLE_AFTER else 0
        self._youngDeaths[index] = young
        delay = restartDelay(young)
        log.error(
            "Worker {index} (pid {pid}) ended after {lived:.1f} s ({why}); "
            "starting it again in {delay:g} s",
            index=index,
            pid=worker.pid,
            lived=lived,
            why=_describe(status, getattr(reason.value, "signal", None)),
            delay=delay,
        )
        self.restarts += 1
        self._restartLater(index, delay)

    def _restartLater(self, index: int, delay: float = MAX_RESTART_DELAY) -> None:
        if self.stopping:
            return
        self._pendingStarts[index] = self.reactor.callLater(delay, self._start, index)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        self.stopping = True
        if self._startupWait is not None:
            self._startupWait.cancel()
            self._startupWait = None
        for pending in self._pendingStarts.values():
            pending.cancel()
        self._pendingStarts.clear()
        for port in self.distributor.stop():
            port.stopListening()
        stopped = Deferred.fromCoroutine(self._stopWorkers())
        # None running (all waiting to be started again): those waiting
        # for the stop need not.
        self._releaseIfStopped()
        return stopped

    async def _stopWorkers(self) -> None:
        if self.workers:
            log.info("Shutting down: {count} workers drain their uploads", count=len(self.workers))
            allEnded = self.whenStopped()
            for worker in list(self.workers.values()):
                self._signal(worker, "TERM")
            limit = self.drainTimeout + ABORT_TIMEOUT + CLOSE_TIMEOUT + STOP_GRACE
            later = self.reactor.callLater(limit, self._killRemaining)
            await allEnded
            if later.active():
                later.cancel()

    def _killRemaining(self) -> None:
        for worker in list(self.workers.values()):
            log.error(
                "Shutting down: worker {index} (pid {pid}) is still running; killed",
                index=worker.index,
                pid=worker.pid,
            )
            self._signal(worker, "KILL")

    def _signal(self, worker: Worker, name: str) -> None:
        try:
            worker.process.signalProcess(name)
        except ProcessExitedAlready:
            pass

    def ready(self) -> list[Worker]:
        """
        @return: the workers taking connections, by number.
        """
        return [w for _, w in sorted(self.workers.items()) if w.ready]

    def _releaseIfStopped(self) -> None:
        if self.stopping and not self.workers:
            waiting, self._allEnded = self._allEnded, []
            for waiter in waiting:
                waiter.callback(None)

    def whenStopped(self) -> Deferred[None]:
        """
        @return: a Deferred firing once every worker has ended at a
            shutdown.
        """
        if self.stopping and not self.workers:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._allEnded.append(waiter)
        return waiter


def _describe(status: int | None, signalNumber: int | None) -> str:
    if signalNumber is not None:
        try:
            return f"killed by {signal.Signals(signalNumber).name}"
        except ValueError:
            return f"killed by signal {signalNumber}"
    return f"exit status {status}"
