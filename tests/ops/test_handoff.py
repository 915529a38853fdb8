"""
Tests for L{twisted_s3sftp.ops.handoff}: connections handed from the
parent to its workers in turn, and adopted by a worker.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from twisted_s3sftp.ops.handoff import (
    DRAINING,
    READY,
    Channel,
    Distributor,
    Inlet,
    channelPair,
    stopSignalsOnce,
)


class FakeChannel:
    """
    A channel recording what it was sent.
    """

    def __init__(self, ready: bool = True, works: bool = True) -> None:
        self.ready = ready
        self.works = works
        self.sent: list[int] = []

    def send(self, listener: int, connection: Any) -> bool:
        if self.works:
            self.sent.append(listener)
        return self.works


class DistributorTests(SynchronousTestCase):
    """
    L{Distributor.handOut}.
    """

    def test_inTurn(self) -> None:
        """
        Connections go to the workers in turn, skipping one that is not
        ready and one whose channel refuses; with none able, the
        connection is refused.
        """
        distributor = Distributor(MemoryReactorClock())
        channels = [FakeChannel(), FakeChannel(ready=False), FakeChannel(), FakeChannel()]
        distributor.channels = channels  # type: ignore[assignment]
        for _ in range(6):
            self.assertTrue(distributor.handOut(0, None))  # type: ignore[arg-type]
        self.assertEqual([len(c.sent) for c in channels], [2, 0, 2, 2])
        channels[2].works = False
        for _ in range(4):
            distributor.handOut(1, None)  # type: ignore[arg-type]
        self.assertEqual([len(c.sent) for c in channels], [4, 0, 2, 4])
        for channel in channels:
            channel.works = False
        self.assertFalse(distributor.handOut(0, None))  # type: ignore[arg-type]


class AdoptingReactor(MemoryReactorClock):
    """
    Records adopted connections.
    """

    def __init__(self) -> None:
        super().__init__()
        self.adopted: list[tuple[int, Any]] = []
        self.stopped = False

    def adoptStreamConnection(self, fd: int, family: int, factory: Any) -> None:
        self.adopted.append((family, factory))


class ChannelTests(SynchronousTestCase):
    """
    A L{Channel} and an L{Inlet} at its two ends.
    """

    def setUp(self) -> None:
        self.parentEnd, self.workerEnd = channelPair()
        self.gone: list[str] = []
        self.channel = Channel(1, self.parentEnd, lambda: self.gone.append("worker"))
        self.reactor = AdoptingReactor()
        self.inlet = Inlet(
            self.reactor, self.workerEnd, ["plain", "proxied"], lambda: self.gone.append("parent")
        )
        self.addCleanup(self.parentEnd.close)
        self.addCleanup(self.workerEnd.close)

    def test_readyAndDraining(self) -> None:
        """
        The worker's inlet says it is ready when it starts and draining
        when it stops; the parent's channel follows.
        """
        self.inlet.start()
        self.assertIn(self.inlet, self.reactor.readers)
        self.channel.doRead()
        self.assertTrue(self.channel.ready)
        self.inlet.stop()
        self.assertNotIn(self.inlet, self.reactor.readers)
        self.channel.doRead()
        self.assertFalse(self.channel.ready)
        self.assertEqual((READY, DRAINING), (b"R", b"D"))

    def test_handedOver(self) -> None:
        """
        A connection sent down the channel is adopted by the worker with
        the factory of the listener it came in on; the parent's copy may
        be closed at once.
        """
        self.inlet.start()
        client, server = socket.socketpair()
        self.addCleanup(client.close)
        self.assertTrue(self.channel.send(1, server))
        server.close()
        self.inlet.doRead()
        self.assertEqual(self.reactor.adopted, [(socket.AF_UNIX, "proxied")])

    def test_ends(self) -> None:
        """
        Each end sees the other close: the worker stops, the parent
        forgets the worker.
        """
        self.inlet.start()
        self.parentEnd.close()
        self.inlet.doRead()
        self.assertEqual(self.gone, ["parent"])
        self.assertFalse(self.inlet.connected)

    def test_workerGone(self) -> None:
        """
        The parent sees a worker's end close.
        """
        self.workerEnd.close()
        self.channel.doRead()
        self.assertEqual(self.gone, ["worker"])
        self.assertFalse(self.channel.ready)


class StopSignalsOnceTests(SynchronousTestCase):
    """
    L{stopSignalsOnce}.
    """

    def test_once(self) -> None:
        """
        The first SIGTERM or SIGINT reaches the handler installed before
        (the reactor's); both are ignored after it.
        """
        import signal

        saved = {n: signal.getsignal(n) for n in (signal.SIGTERM, signal.SIGINT)}
        for number, handler in saved.items():
            self.addCleanup(signal.signal, number, handler)
        seen: list[int] = []
        signal.signal(signal.SIGTERM, lambda n, f: seen.append(n))
        signal.signal(signal.SIGINT, lambda n, f: seen.append(n))
        stopSignalsOnce()
        handler = signal.getsignal(signal.SIGTERM)
        assert callable(handler)
        handler(signal.SIGTERM, None)
        self.assertEqual(seen, [signal.SIGTERM])
        self.assertEqual(signal.getsignal(signal.SIGTERM), signal.SIG_IGN)
        self.assertEqual(signal.getsignal(signal.SIGINT), signal.SIG_IGN)


class FakePort:
    """
    A listening port the distributor takes over.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.socket = sock
        self.reading = True

    def stopReading(self) -> None:
        self.reading = False


class HandOutRetryTests(SynchronousTestCase):
    """
    A connection no worker can take waits in the parent, and the others in
    the backlog, until one can.
    """

    def test_heldAndRetried(self) -> None:
        """
        When every worker's queue is full, the connection accepted is held
        and the listener is no longer read; it is handed out once a worker
        takes it, and reading resumes.
        """
        import os
        import tempfile

        from twisted_s3sftp.ops.handoff import HANDOUT_RETRY

        path = os.path.join(tempfile.mkdtemp(), "listen.sock")
        listening = socket.socket(socket.AF_UNIX)
        listening.bind(path)
        listening.listen(8)
        listening.setblocking(False)
        self.addCleanup(listening.close)
        client = socket.socket(socket.AF_UNIX)
        client.connect(path)
        self.addCleanup(client.close)
        reactor = MemoryReactorClock()
        distributor = Distributor(reactor)
        full = FakeChannel(works=False)
        distributor.channels = [full]  # type: ignore[list-item]
        port = FakePort(listening)
        distributor.listen([port])
        self.assertFalse(port.reading)
        (reader,) = [r for r in reactor.readers if getattr(r, "port", None) is port]
        reader.doRead()
        self.assertEqual(full.sent, [])
        self.assertNotIn(reader, reactor.readers)
        reactor.advance(HANDOUT_RETRY)
        self.assertNotIn(reader, reactor.readers)
        full.works = True
        reactor.advance(HANDOUT_RETRY)
        self.assertEqual(full.sent, [0])
        self.assertIn(reader, reactor.readers)
        distributor.stop()
        self.assertNotIn(reader, reactor.readers)


class InletPauseTests(SynchronousTestCase):
    """
    An L{Inlet} paused by its factory's accept gate tells the parent.
    """

    def test_pauseResume(self) -> None:
        """
        Paused, the worker's channel reads as not ready in the parent;
        resumed, ready again; once draining, the gate cannot resume it.
        """
        parentEnd, workerEnd = channelPair()
        self.addCleanup(parentEnd.close)
        self.addCleanup(workerEnd.close)
        changes: list[bool] = []
        channel = Channel(1, parentEnd, lambda: None)
        channel.onReady = lambda: changes.append(channel.ready)
        reactor = AdoptingReactor()
        inlet = Inlet(reactor, workerEnd, ["plain"], lambda: None)
        inlet.start()
        inlet.stopReading()
        inlet.startReading()
        inlet.stop()
        inlet.startReading()
        channel.doRead()
        self.assertEqual(changes, [True, False, True, False])
        self.assertNotIn(inlet, reactor.readers)
