"""
Tests for L{twisted_s3sftp.ops.workers}: the parent of C{--workers N}
starts its workers, starts again one that dies (with a back-off), relays
their logs, and stops them all with SIGTERM at a shutdown.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import Logger, capturedLogs, eventAsJSON
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from twisted_s3sftp.ops.workers import (
    CHANNEL_FD,
    MAX_RESTART_DELAY,
    STABLE_AFTER,
    STARTUP_WAIT,
    Workers,
    metricsListener,
    restartDelay,
    workerCommand,
)


class FakeProcess:
    """
    A spawned process: records the signals sent.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.signals: list[str] = []

    def signalProcess(self, name: str) -> None:
        self.signals.append(name)

    def closeStdin(self) -> None:
        pass


class SpawningReactor(MemoryReactorClock):
    """
    A memory reactor that records spawned processes.
    """

    def __init__(self) -> None:
        super().__init__()
        self.spawned: list[tuple[Any, list[str], dict[int, Any], FakeProcess]] = []

    def spawnProcess(  # type: ignore[override]
        self, protocol: Any, executable: str, args: list[str], env: Any, path: Any, childFDs: Any
    ) -> FakeProcess:
        process = FakeProcess(1000 + len(self.spawned))
        self.spawned.append((protocol, args, childFDs, process))
        return process


def ended(signal: int | None = None) -> Failure:
    """
    @return: the reason a process ended: killed by C{signal}, or exited 0.
    """
    if signal is None:
        return Failure(ProcessDone(0))
    return Failure(ProcessTerminated(signal=signal))


class RestartDelayTests(SynchronousTestCase):
    """
    L{restartDelay}.
    """

    def test_schedule(self) -> None:
        """
        A worker that had run a while starts again at once; one dying young
        waits 1, 2, 4 ... seconds, up to L{MAX_RESTART_DELAY}.
        """
        self.assertEqual([restartDelay(n) for n in range(6)], [0, 1, 2, 4, 8, 16])
        self.assertEqual(restartDelay(40), MAX_RESTART_DELAY)


class WorkerCommandTests(SynchronousTestCase):
    """
    L{workerCommand}.
    """

    def test_command(self) -> None:
        """
        A worker runs twistd in the foreground without a pid file, with the
        parent's own arguments, its number and its channel, and its metrics
        on the descriptor the parent hands it.
        """
        command = workerCommand(["--bucket=b", "--workers=2"], 3, True)
        self.assertIn("--nodaemon", command)
        self.assertIn("--pidfile=", command)
        tail = command[command.index("s3sftp") :]
        self.assertEqual(
            tail,
            [
                "s3sftp",
                "--bucket=b",
                "--workers=2",
                "--worker-index=3",
                f"--worker-channel={CHANNEL_FD}",
                "--worker-metrics-fd=4",
            ],
        )
        self.assertFalse([a for a in workerCommand([], 1, False) if "metrics" in a])

    def test_metricsListener(self) -> None:
        """
        A worker's metrics socket listens in the abstract namespace (no
        file), under a name of its own each time.
        """
        import socket

        first, address = metricsListener(1)
        self.addCleanup(first.close)
        second, other = metricsListener(1)
        self.addCleanup(second.close)
        self.assertTrue(address.startswith("\0s3sftp-"))
        self.assertNotEqual(address, other)
        client = socket.socket(socket.AF_UNIX)
        self.addCleanup(client.close)
        client.connect(address)


class WorkersTests(SynchronousTestCase):
    """
    L{Workers}, the parent.
    """

    def setUp(self) -> None:
        self.reactor = SpawningReactor()
        self.workers = Workers(self.reactor, 2, ["--bucket=b"], [], drainTimeout=10)
        self.workers.startService()
        self.addCleanup(self._closeChannels)

    def _closeChannels(self) -> None:
        for worker in self.workers.workers.values():
            worker.channel.close()

    def test_started(self) -> None:
        """
        Each worker gets its number and its channel as descriptor 3; its
        standard output and error are read by the parent.
        """
        self.assertEqual(len(self.reactor.spawned), 2)
        for number, (_, args, childFDs, _) in enumerate(self.reactor.spawned, 1):
            self.assertIn(f"--worker-index={number}", args)
            self.assertEqual(childFDs[1], "r")
            self.assertEqual(childFDs[2], "r")
            self.assertIsInstance(childFDs[CHANNEL_FD], int)
        self.assertEqual(sorted(self.workers.workers), [1, 2])
        # None has said it is ready yet.
        self.assertEqual(self.workers.ready(), [])

    def test_heldUntilReady(self) -> None:
        """
        At start-up connections are held in the backlog until every worker
        is ready, so that the first one up does not take a burst whole; or
        until L{STARTUP_WAIT} seconds have passed, with those ready.
        """
        channels = [worker.channel for worker in self.workers.workers.values()]
        channels[0].ready = True
        channels[0].onReady()
        self.assertTrue(self.workers.distributor._holding)
        channels[1].ready = True
        channels[1].onReady()
        self.assertFalse(self.workers.distributor._holding)
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        late = Workers(self.reactor, 2, [], [], drainTimeout=10)
        late.startService()
        self.addCleanup(lambda: [w.channel.close() for w in late.workers.values()])
        self.assertTrue(late.distributor._holding)
        self.reactor.advance(STARTUP_WAIT)
        self.assertFalse(late.distributor._holding)

    def test_restartAfterYoungDeath(self) -> None:
        """
        A worker dying soon after it started is started again after a
        second, then two, and the restarts are counted.
        """
        protocol = self.reactor.spawned[0][0]
        with capturedLogs() as events:
            protocol.processEnded(ended(9))
        self.assertIn("killed by SIGKILL", [e.get("why") for e in events])
        self.assertEqual(sorted(self.workers.workers), [2])
        self.reactor.advance(0.9)
        self.assertEqual(len(self.reactor.spawned), 2)
        self.reactor.advance(0.2)
        self.assertEqual(len(self.reactor.spawned), 3)
        self.assertIn("--worker-index=1", self.reactor.spawned[2][1])
        self.reactor.spawned[2][0].processEnded(ended(9))
        self.reactor.advance(1.5)
        self.assertEqual(len(self.reactor.spawned), 3)
        self.reactor.advance(0.6)
        self.assertEqual(len(self.reactor.spawned), 4)
        self.assertEqual(self.workers.restarts, 2)

    def test_restartAfterLongLife(self) -> None:
        """
        A worker that had run longer than L{STABLE_AFTER} is started again
        at once.
        """
        self.reactor.advance(STABLE_AFTER + 1)
        self.reactor.spawned[1][0].processEnded(ended())
        self.reactor.advance(0)
        self.assertEqual(len(self.reactor.spawned), 3)
        self.assertIn("--worker-index=2", self.reactor.spawned[2][1])

    def test_stop(self) -> None:
        """
        At a shutdown every worker gets SIGTERM and none is started again;
        the stop completes when the last has ended, and a worker still
        running well after its drain timeout gets SIGKILL.
        """
        stopped = self.workers.stopService()
        processes = [spawned[3] for spawned in self.reactor.spawned]
        self.assertEqual([p.signals for p in processes], [["TERM"], ["TERM"]])
        self.reactor.spawned[0][0].processEnded(ended())
        self.assertNoResult(stopped)
        self.reactor.advance(120)
        self.assertEqual(processes[1].signals, ["TERM", "KILL"])
        self.reactor.spawned[1][0].processEnded(ended(9))
        self.successResultOf(stopped)
        self.reactor.advance(60)
        self.assertEqual(len(self.reactor.spawned), 2)

    def test_stopWithNoneRunning(self) -> None:
        """
        A shutdown while no worker runs (every one waiting to be started
        again) completes at once, for the stop and for whoever waited for
        it before it began (the metrics endpoint).
        """
        for protocol, _, _, _ in self.reactor.spawned:
            protocol.processEnded(ended(9))
        self.assertEqual(self.workers.workers, {})
        waiting = self.workers.whenStopped()
        self.successResultOf(self.workers.stopService())
        self.successResultOf(waiting)
        self.reactor.advance(60)
        self.assertEqual(len(self.reactor.spawned), 2)

    def test_logRelayed(self) -> None:
        """
        A worker's JSON log events are published in the parent with its
        number added and at the head of their system; a line that is not
        an event (written before its log began) is logged as a warning.
        """
        with capturedLogs() as produced:
            Logger(namespace="w").info("stored {key}", key="a/b")
        line = eventAsJSON(produced[0]).encode() + b"\n"
        protocol = self.reactor.spawned[1][0]
        with capturedLogs() as events:
            protocol.childDataReceived(1, line[:10])
            protocol.childDataReceived(1, line[10:] + b"not json\n")
            protocol.childDataReceived(2, b"Traceback: boom\n")
        relayed = [e for e in events if e.get("worker") == 2]
        self.assertEqual(len(relayed), 3, events)
        self.assertEqual(relayed[0]["log_system"], "worker 2")
        self.assertEqual(relayed[0]["log_namespace"], "w")
        from twisted.logger import formatEvent

        self.assertEqual(formatEvent(relayed[0]), "stored a/b")
        self.assertEqual([formatEvent(e) for e in relayed[1:]], ["not json", "Traceback: boom"])
        json.dumps(relayed[1], default=str)

    def test_nulRelayedReadable(self) -> None:
        """
        A NUL in a relayed line (Twisted naming the abstract socket of a
        worker's metrics) is written as C{@}, not as a NUL byte.
        """
        from twisted.logger import formatEvent

        with capturedLogs() as produced:
            Logger(namespace="w").info("(UNIX Port {name} Closed)", name="\0s3sftp-1")
        protocol = self.reactor.spawned[0][0]
        with capturedLogs() as events:
            protocol.childDataReceived(1, eventAsJSON(produced[0]).encode() + b"\n")
        (relayed,) = [e for e in events if e.get("worker") == 1]
        self.assertEqual(formatEvent(relayed), "(UNIX Port @s3sftp-1 Closed)")
