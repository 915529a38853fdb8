"""
Connections accepted by the parent process and served by its workers
(C{--workers N}).

The parent owns the listening sockets.  It accepts every connection
itself and hands the connected socket to a worker over a Unix
C{SOCK_SEQPACKET} socket pair (C{SCM_RIGHTS}), one message per
connection: one byte naming the listener it came in on (so that a worker
knows which listeners read a PROXY header), and the descriptor.  The
worker adopts it (C{adoptStreamConnection}) and serves it as if it had
accepted it.

Why the parent accepts, rather than letting every worker accept on one
shared socket or on sockets of its own (C{SO_REUSEPORT}):

  - workers sharing one socket are woken together and the quickest takes
    every connection queued (Twisted accepts up to a hundred at a time),
    so a burst from one partner can land on one worker;
  - with C{SO_REUSEPORT} the kernel hashes each connection to one
    worker's socket: while that worker is down (killed, restarting,
    crash-looping) its share of new connections waits in a queue nobody
    reads;
  - the parent hands connections out in turn to the workers that are up
    (L{Distributor}), so a burst is spread evenly and a dead worker gets
    none; when no worker is up it stops accepting, and connections wait
    in the kernel's backlog rather than being refused.

The channel carries, from the worker, C{R} (ready: serving), and C{D}
(draining: send no more); its end of file means the worker is gone, or,
seen from the worker, that the parent is.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
from collections.abc import Callable, Sequence
from typing import Any, cast

from twisted.application.service import Service
from twisted.internet.defer import succeed
from twisted.internet.interfaces import IDelayedCall, IReadDescriptor, IStreamServerEndpoint
from twisted.logger import Logger
from twisted.protocols.haproxy import proxyEndpoint
from twisted.python.failure import Failure
from zope.interface import implementer

log = Logger()

#: What a worker says on its channel.
READY = b"R"
DRAINING = b"D"

#: Connections accepted from one listener per turn of the reactor.
ACCEPTS_PER_READ = 64

#: Seconds the parent stops accepting after running out of descriptors
#: (or after an error of C{accept} it does not know).
DESCRIPTORS_BACKOFF = 1.0

#: Seconds between two tries to hand out a connection no worker could
#: take (every worker's queue full); the parent accepts no other meanwhile.
HANDOUT_RETRY = 0.05


def channelPair() -> tuple[socket.socket, socket.socket]:
    """
    @return: a parent's end (non-blocking) and a worker's end of a new
        channel.
    """
    parentEnd, workerEnd = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    parentEnd.setblocking(False)
    return parentEnd, workerEnd


@implementer(IReadDescriptor)
class Channel:
    """
    The parent's end of one worker's channel.

    @ivar index: the worker's number.
    @ivar ready: whether the worker takes connections.
    @ivar onGone: called once the worker's end is closed.
    @ivar onReady: called whenever C{ready} changes.
    """

    def __init__(self, index: int, sock: socket.socket, onGone: Callable[[], None]) -> None:
        self.index = index
        self.socket = sock
        self.ready = False
        self.onGone = onGone
        self.onReady: Callable[[], None] = lambda: None

    def fileno(self) -> int:
        return self.socket.fileno()

    def logPrefix(self) -> str:
        return f"worker {self.index} channel"

    def doRead(self) -> None:
        while True:
            try:
                message = self.socket.recv(16)
            except BlockingIOError:
                return
            except OSError:
                message = b""
            if not message:
                self.ready = False
                self.onGone()
                return
            if message in (READY, DRAINING):
                self.ready = message == READY
                self.onReady()

    def connectionLost(self, reason: object) -> None:
        pass

    def send(self, listener: int, connection: socket.socket) -> bool:
        """
        Hand C{connection} to the worker.

        @return: whether it was sent (not if the worker's queue is full or
            its end is closed).
        """
        try:
            socket.send_fds(self.socket, [bytes([listener])], [connection.fileno()])
        except OSError:
            return False
        return True

    def close(self) -> None:
        self.ready = False
        self.socket.close()


@implementer(IReadDescriptor)
class _Listening:
    """
    One listening socket, read by the L{Distributor}.
    """

    def __init__(self, distributor: Distributor, index: int, port: Any) -> None:
        self.distributor = distributor
        self.index = index
        self.port = port
        self.socket: socket.socket = port.socket

    def fileno(self) -> int:
        return self.socket.fileno()

    def logPrefix(self) -> str:
        return "s3sftp listener"

    def doRead(self) -> None:
        self.distributor.acceptFrom(self)

    def connectionLost(self, reason: object) -> None:
        pass


class Distributor:
    """
    Accepts on the parent's listening ports and hands each connection to
    the next worker that is up, in turn.

    @ivar reactor: reads the ports (L{IReactorFDSet}) and times the
        back-off after running out of descriptors.
    @ivar channels: the workers' channels.
    """

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.channels: list[Channel] = []
        self._listening: list[_Listening] = []
        self._next = 0
        self._reading = False
        self._stopped = False
        self._holding = False
        self._outOfDescriptors = False
        self._backoff: IDelayedCall | None = None
        self._waiting: tuple[int, socket.socket] | None = None
        self._retry: IDelayedCall | None = None

    def listen(self, ports: Sequence[Any]) -> None:
        """
        Take over the Twisted listening ports C{ports} (in the order of
        C{--listen}): their sockets are read here from now on.
        """
        for index, port in enumerate(ports):
            # The port's own accepting stops; its socket stays open.
            port.stopReading()
            self._listening.append(_Listening(self, index, port))
        self.update()

    def add(self, channel: Channel) -> None:
        """
        Hand connections to C{channel}'s worker once it says it is ready.
        """
        self.channels.append(channel)
        channel.onReady = self.update
        self.reactor.addReader(channel)

    def remove(self, channel: Channel) -> None:
        """
        C{channel}'s worker is gone.
        """
        if channel in self.channels:
            self.channels.remove(channel)
        self.reactor.removeReader(channel)
        self.update()

    def update(self) -> None:
        """
        Accept while some worker is ready; otherwise leave connections in
        the backlog.
        """
        wanted = (
            not self._stopped
            and not self._holding
            and not self._outOfDescriptors
            and self._waiting is None
            and any(channel.ready for channel in self.channels)
        )
        if wanted == self._reading:
            return
        self._reading = wanted
        for listening in self._listening:
            if wanted:
                self.reactor.addReader(listening)
            else:
                self.reactor.removeReader(listening)

    def hold(self, holding: bool) -> None:
        """
        Hold connections in the backlog, or hand them out again.
        """
        self._holding = holding
        self.update()

    def acceptFrom(self, listening: _Listening) -> None:
        """
        Accept what is queued on C{listening}, and hand it out.
        """
        for _ in range(ACCEPTS_PER_READ):
            try:
                connection, _address = listening.socket.accept()
            except BlockingIOError:
                return
            except OSError as e:
                if e.errno in (errno.ECONNABORTED, errno.EPROTO, errno.EPERM, errno.EINTR):
                    # That connection is gone.
                    continue
                log.warn(
                    "Not accepting connections for {seconds:g} s: {error}",
                    seconds=DESCRIPTORS_BACKOFF,
                    error=os.strerror(e.errno or 0),
                )
                self._pauseFor(DESCRIPTORS_BACKOFF)
                return
            if not self.handOut(listening.index, connection):
                # Every worker's queue is full: hold this one, and accept
                # no other (they wait in the backlog) until it is taken.
                self._waiting = (listening.index, connection)
                self.update()
                self._retryLater()
                return
            connection.close()

    def _retryLater(self) -> None:
        self._retry = self.reactor.callLater(HANDOUT_RETRY, self._retryWaiting)

    def _retryWaiting(self) -> None:
        self._retry = None
        if self._waiting is None:
            return
        listener, connection = self._waiting
        if self._stopped or self.handOut(listener, connection):
            self._waiting = None
            connection.close()
            self.update()
        else:
            self._retryLater()

    def handOut(self, listener: int, connection: socket.socket) -> bool:
        """
        Send C{connection} to the next ready worker, trying each in turn.

        @return: whether one took it.
        """
        count = len(self.channels)
        for step in range(count):
            channel = self.channels[(self._next + step) % count]
            if channel.ready and channel.send(listener, connection):
                self._next = (self._next + step + 1) % count
                return True
        return False

    def _pauseFor(self, seconds: float) -> None:
        if self._backoff is not None:
            return

        def again() -> None:
            self._backoff = None
            self._outOfDescriptors = False
            self.update()

        self._outOfDescriptors = True
        self.update()
        self._backoff = self.reactor.callLater(seconds, again)

    def stop(self) -> list[Any]:
        """
        Stop accepting for good (a shutdown).

        @return: the ports, for their owner to close.
        """
        self._stopped = True
        if self._backoff is not None:
            self._backoff.cancel()
            self._backoff = None
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        if self._waiting is not None:
            self._waiting[1].close()
            self._waiting = None
        self.update()
        return [listening.port for listening in self._listening]


@implementer(IStreamServerEndpoint)
class _Capture:
    """
    An endpoint that only keeps the factory it is asked to listen with.
    """

    factory: Any = None

    def listen(self, factory: Any) -> Any:
        self.factory = factory
        return succeed(None)


def listenerFactory(description: str, factory: Any) -> Any:
    """
    @return: the factory a worker serves the connections of listener
        C{description} with: C{factory}, behind Twisted's PROXY-protocol
        wrapper for a C{haproxy:} listener (as its endpoint would wrap it).
    """
    if not description.startswith("haproxy:"):
        return factory
    capture = _Capture()
    proxyEndpoint(capture).listen(factory)
    return capture.factory


def stopSignalsOnce() -> None:
    """
    Make the first SIGTERM or SIGINT stop the worker, and ignore the rest.

    A worker may get the signal twice, from one source and from its parent
    (systemd's default C{KillMode=control-group} signals every process of
    the unit, a terminal's ^C the whole process group, and the parent
    passes its own on); a second stop of the reactor would be an error.
    """
    for number in (signal.SIGTERM, signal.SIGINT):
        handler = signal.getsignal(number)
        if not callable(handler):
            continue

        def once(signum: int, frame: Any, handler: Any = handler) -> None:
            for other in (signal.SIGTERM, signal.SIGINT):
                signal.signal(other, signal.SIG_IGN)
            handler(signum, frame)

        signal.signal(number, once)


def _peer(connection: socket.socket) -> str:
    try:
        return str(connection.getpeername())
    except OSError:
        return "?"


@implementer(IReadDescriptor)
class Inlet:
    """
    A worker's end of its channel: adopts the connections the parent
    hands over, as a listening port would accept them.

    It stands for a port to the factory's accept gate (it has
    C{stopReading}, C{startReading}, C{connected} and C{disconnecting}),
    so that a worker at its open files cap stops taking connections: it
    tells the parent, which then hands them to the others.

    @ivar factories: the factory for each listener, by its index.
    @ivar onParentGone: called when the parent's end closes, or the inlet
        fails: the worker must stop (and its parent start another).
    """

    def __init__(
        self,
        reactor: Any,
        sock: socket.socket,
        factories: Sequence[Any],
        onParentGone: Callable[[], None],
    ) -> None:
        self.reactor = reactor
        self.socket = sock
        self.socket.setblocking(False)
        self.factories = factories
        self.onParentGone = onParentGone
        self.connected = False
        self.disconnecting = False
        self._reading = False

    def fileno(self) -> int:
        return self.socket.fileno()

    def logPrefix(self) -> str:
        return "s3sftp inlet"

    def start(self) -> None:
        """
        Take connections, and tell the parent so.
        """
        self.connected = True
        self.startReading()

    def stop(self) -> None:
        """
        Take no more connections (a drain), and tell the parent so.
        """
        self.stopReading()
        self.disconnecting = True

    def startReading(self) -> None:
        """
        Take connections again (the factory's accept gate, below its cap).
        """
        if self.disconnecting or not self.connected:
            return
        self._reading = True
        self.reactor.addReader(self)
        self._say(READY)

    def stopReading(self) -> None:
        """
        Take no connections for now (the factory's accept gate, at its
        cap).
        """
        if self.disconnecting:
            return
        self._reading = False
        self.reactor.removeReader(self)
        self._say(DRAINING)

    def _say(self, message: bytes) -> None:
        try:
            self.socket.send(message)
        except OSError:
            pass

    def doRead(self) -> None:
        for _ in range(ACCEPTS_PER_READ):
            if not self._reading:
                # Paused by the last one adopted: the rest wait.
                return
            try:
                message, fds, _flags, _address = socket.recv_fds(
                    self.socket, 16, 4, socket.MSG_CMSG_CLOEXEC
                )
            except BlockingIOError:
                return
            except OSError:
                message, fds = b"", []
            if not message and not fds:
                self.reactor.removeReader(self)
                self._reading = False
                self.connected = False
                self.onParentGone()
                return
            listener = message[0] if message else 0
            for fd in fds:
                self._adopt(listener, fd)

    def _adopt(self, listener: int, fd: int) -> None:
        connection = socket.socket(fileno=fd)
        try:
            if listener >= len(self.factories) or self.disconnecting:
                return
            connection.setblocking(False)
            # The reactor takes a copy of the descriptor.
            self.reactor.adoptStreamConnection(
                connection.fileno(), connection.family, self.factories[listener]
            )
        except OSError:
            # Closed by its client before it got here.
            pass
        finally:
            connection.close()

    def connectionLost(self, reason: object) -> None:
        # Removed by the reactor after an error in doRead: this worker no
        # longer takes connections, so it must go.
        log.failure("The connection inlet failed: stopping the worker", cast(Failure, reason))
        self._reading = False
        self.connected = False
        self._say(DRAINING)
        self.onParentGone()


class InletService(Service):
    """
    A worker's way in: serves the connections its parent hands over from
    start-up until the drain, and stops the worker if the parent goes.

    @ivar inlet: the worker's end of its channel.
    """

    def __init__(self, reactor: Any, fd: int, factories: Sequence[Any], gate: Any) -> None:
        self.reactor = reactor
        self.factories = list(dict.fromkeys(factories))
        self.inlet = Inlet(reactor, socket.socket(fileno=fd), factories, self._parentGone)
        self._gate = gate

    def startService(self) -> None:
        super().startService()
        for factory in self.factories:
            factory.doStart()
        # At the open files cap the factory pauses its "ports": this one.
        self._gate.portListening(self.inlet)
        self.inlet.start()
        # Once the reactor's own handlers are in place.
        self.reactor.callWhenRunning(stopSignalsOnce)

    def stopService(self) -> None:
        super().stopService()
        self.inlet.stop()
        for factory in self.factories:
            factory.doStop()

    def _parentGone(self) -> None:
        if self.running:
            log.warn("No more connections can come (parent gone, or inlet failed): shutting down")
            self.reactor.stop()
