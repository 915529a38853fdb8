"""
The SSH front door: the factory that admits connections, the transport
that enforces the crypto policy and the login grace time, and the
authentication service that counts failures.

  - L{S3SSHFactory} asks L{twisted_s3sftp.ssh.admission.Admission} whether to
    serve each connection now, queue it (over the caps on unauthenticated
    connections: the transport then reads and sends nothing until a slot
    frees) or refuse it (a penalised source, a full queue); pauses
    accepting at its cap on open connections (L{maxConnections}, sized to
    the open files limit); and offers only the host key algorithms of
    L{twisted_s3sftp.ssh.policy}.
  - L{S3ServerTransport} (a L{twisted_s3sftp.ssh.packets.PacketTransport},
    with AEAD ciphers, encrypt-then-MAC and strict key exchange) offers only
    the policy's key exchanges, ciphers, MACs and no compression; drops a
    connection that has not logged in within the grace time (counting the
    banner and key exchange, which Conch does not time at all) and a
    logged-in one that stays silent past the idle timeout; enforces the
    per-user connection cap; and lists the user-key signature algorithms in
    C{server-sig-algs}, so RSA user keys work with an ed25519 host key
    (twisted#12107); a client's ordinary disconnect is not logged as an
    error; a malformed message (which Conch's parsers would raise out of
    C{dataReceived}, logging a traceback) ends the connection with one log
    line.
  - L{S3UserAuthServer} disconnects after the policy's number of failed
    attempts (Conch allows 20), and hands the checker the client's
    address with the key (L{PeerPortal}).
"""

from __future__ import annotations

import copy
from collections import Counter
from typing import Any, cast

from twisted.conch.error import IgnoreAuthentication
from twisted.conch.ssh.common import getNS
from twisted.conch.ssh.factory import SSHFactory
from twisted.conch.ssh.keys import Key
from twisted.conch.ssh.transport import (
    DISCONNECT_BY_APPLICATION,
    DISCONNECT_NO_MORE_AUTH_METHODS_AVAILABLE,
    DISCONNECT_PROTOCOL_ERROR,
    DISCONNECT_TOO_MANY_CONNECTIONS,
)
from twisted.conch.ssh.userauth import SSHUserAuthServer
from twisted.cred.credentials import ISSHPrivateKey
from twisted.cred.portal import Portal
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime, ITCPTransport
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..ops.audit import audit, safeName
from ..ops.logformat import quietObserver
from .admission import (
    AUTH_FAILED,
    GRACE_EXCEEDED,
    NO_AUTH,
    Admission,
    Limits,
    Waiting,
)
from .kex import moduli, registerKeyExchanges
from .keys import ClientKey, blobFingerprint
from .packets import PacketTransport
from .policy import (
    CIPHERS,
    COMPRESSIONS,
    GROUP_EXCHANGE,
    KEY_EXCHANGES,
    MACS,
    MODERN,
    CryptoPolicy,
)
from .session import S3Connection

log = Logger()

#: Bytes read from a connection at a time (Twisted's default is 64 KiB):
#: fewer, larger reads mean fewer reactor turns and fewer reply sends per
#: byte uploaded.  A read is held only while its packets are handled
#: (L{PacketTransport.dataReceived} keeps no more than a partial packet).
READ_SIZE = 1024 * 1024

#: Seconds a disconnect message is given to leave before the connection
#: is cut regardless (a peer that reads nothing must not keep it).
DISCONNECT_LINGER = 5.0

#: Seconds clients are given at a shutdown to end their sessions before
#: they are disconnected.
SHUTDOWN_GRACE = 2.0


class S3UserAuthServer(SSHUserAuthServer):
    """
    Public key authentication, with the policy's cap on failed attempts.

    The transport times the whole login (L{S3ServerTransport}); Conch's own
    10-hour login timeout is set to the same grace time as a second guard.
    """

    transport: S3ServerTransport

    def serviceStarted(self) -> None:
        factory = self.transport.factory
        self.clock = factory.clock
        # Conch annotates it as an int; it is a delay for callLater.
        self.loginTimeout = factory.limits.loginGrace  # type: ignore[assignment]
        # Conch disconnects once failures exceed this count.
        self.attemptsBeforeDisconnect = factory.limits.maxAuthTries - 1
        super().serviceStarted()
        # The checker judges key options and allow lists by the client's
        # address: the portal is given credentials that carry it.
        self.portal = PeerPortal(factory.portal, self.transport)

    _keyBlob: bytes | None = None

    def auth_publickey(self, packet: bytes) -> Any:
        # Remember the key, for the audit trail's fingerprint.
        try:
            _, self._keyBlob, _ = getNS(packet[1:], 2)
        except Exception:
            self._keyBlob = None
        return super().auth_publickey(packet)

    def _cbFinishedAuth(self, result: Any) -> None:
        super()._cbFinishedAuth(result)
        rights = getattr(self.transport.avatar, "rights", None)
        self._audit("success", rights=rights.describe() if rights is not None else None)

    def _ebBadAuth(self, reason: Failure) -> None:
        if self.method != b"none" and not reason.check(IgnoreAuthentication):
            # Counted per connection: a client may restart this service
            # (paramiko does, for every attempt), which resets Conch's
            # own count.
            self.transport.authFailures += 1
            self.loginAttempts = self.transport.authFailures - 1
            self._audit("failure", reason.getErrorMessage())
        super()._ebBadAuth(reason)

    def _audit(self, outcome: str, reason: str | None = None, **fields: Any) -> None:
        """
        Record a login attempt in the audit trail.
        """
        audit(
            "login",
            warn=outcome != "success",
            outcome=outcome,
            user=safeName(self.user or b""),
            source=getattr(self.transport, "peerHost", None),
            fingerprint="-" if self._keyBlob is None else blobFingerprint(self._keyBlob),
            method=(self.method or b"").decode("ascii", "replace"),
            reason=reason,
            **negotiated(self.transport),
            **fields,
        )


class PeerPortal:
    """
    A connection's view of the portal: public key credentials are passed on
    as L{ClientKey}s carrying the client's address.

    @ivar portal: the server's portal.
    @ivar transport: the connection.
    """

    def __init__(self, portal: Portal, transport: S3ServerTransport) -> None:
        self.portal = portal
        self.transport = transport

    def login(self, credentials: Any, mind: object, *interfaces: Any) -> Deferred[Any]:
        """
        L{Portal.login}, from the transport's client address.
        """
        if ISSHPrivateKey.providedBy(credentials):
            peerHost = getattr(self.transport, "peerHost", None)
            credentials = ClientKey.fromCredentials(credentials, peerHost)
        return self.portal.login(credentials, mind, *interfaces)


def negotiated(transport: Any) -> dict[str, str]:
    """
    @param transport: a transport past its first key exchange.
    @return: its key exchange, host key algorithm, and the cipher and MAC
        of what the client sends (the other direction is almost always the
        same), for the audit trail: an operator sees which clients need
        which algorithms.
    """
    ciphers = getattr(transport, "currentEncryptions", None)
    names = {
        "kex": getattr(transport, "kexAlg", None),
        "hostKeyAlgorithm": getattr(transport, "keyAlg", None),
        "cipher": getattr(ciphers, "inCipType", None),
        "mac": getattr(ciphers, "inMACType", None),
    }
    return {
        field: value.decode("ascii", "replace") if isinstance(value, bytes) else "-"
        for field, value in names.items()
    }


class S3ServerTransport(PacketTransport):
    """
    The server transport, with the crypto policy, the login grace time,
    the idle timeout and the per-user connection cap.

    Nagle's algorithm is off: with the large windows uploads get, Nagle and
    delayed ACKs were measured stalling uploads at a fifth of their speed
    (testbed.md).  It reads up to L{READ_SIZE} at a time: 256 KiB rather
    than 64 cut the server's CPU per GiB uploaded by a tenth (4.7 against
    5.2 CPU-s), and 1 MiB rather than 256 KiB by another 0.3 with AES-GCM
    (bench/README.md).

    @ivar peerHost: the client's IP address, as admitted by the factory.
    @ivar proxied: whether the connection comes through a load balancer
        speaking the PROXY protocol (C{--listen haproxy:...}).
    @ivar authFailures: failed authentication attempts so far.
    """

    supportedKeyExchanges = list(KEY_EXCHANGES)
    supportedCiphers = list(CIPHERS)
    supportedMACs = list(MACS)
    supportedCompressions = list(COMPRESSIONS)

    factory: S3SSHFactory
    transport: ITCPTransport

    peerHost: str | None = None
    proxied = False
    authFailures = 0
    _timer: IDelayedCall | None = None
    _user: str | None = None
    _timedOut = False
    _ended = False
    _refused = False
    #: Set while the connection waits in the admission queue.
    _waiting: Waiting | None = None
    #: What a queued connection behind a PROXY header sent meanwhile.
    _held = b""
    #: Built past the connection cap (behind a PROXY header): closed at once.
    _overCap = False

    def connectionMade(self) -> None:
        if hasattr(self.transport, "bufferSize"):
            # A FileDescriptor's attribute, in no interface.
            self.transport.bufferSize = READ_SIZE
        setNoDelay = getattr(self.transport, "setTcpNoDelay", None)
        if setNoDelay is not None:
            try:
                setNoDelay(True)
            except OSError:
                pass
        if self._overCap:
            self._refused = self._ended = True
            self.transport.abortConnection()
            return
        # The login grace time runs from accept, queued or not.
        self._timer = self.factory.clock.callLater(self.factory.limits.loginGrace, self._timeout)
        if self._waiting is not None:
            # Queued for a slot: nothing is read or sent until then.
            cast(IPushProducer, self.transport).pauseProducing()
            return
        super().connectionMade()

    def admitted(self) -> None:
        """
        A slot freed for this queued connection: start serving it, with
        the login time it has left.
        """
        self._waiting = None
        cast(IPushProducer, self.transport).resumeProducing()
        if self.proxied:
            held, self._held = self._held, b""
            self.dataReceived(held)
        else:
            super().connectionMade()

    def dataReceived(self, data: bytes) -> None:
        if self._refused:
            return
        if (
            self.proxied
            and (self.peerHost is None or self._waiting is not None)
            and not self._admitProxied(data)
        ):
            return
        if self._user is not None and self._timer is not None:
            self._timer.reset(self.factory.limits.idleTimeout)
        try:
            super().dataReceived(data)
        except Exception as e:
            self._malformed(e)

    def _admitProxied(self, data: bytes) -> bool:
        """
        Behind a load balancer speaking the PROXY protocol, the client's
        address is known only once the header has been read, which is
        when the first bytes reach this protocol: admit it then.  Queued,
        it keeps C{data} and reads nothing more until admitted.

        @return: whether the connection was admitted.
        """
        if self._waiting is not None:
            self._held += data
            return False
        host = getattr(self.transport.getPeer(), "host", None)
        if host:
            decision = self.factory.admission.admit(host, self.admitted)
            if isinstance(decision, str):
                self.factory.logRefusal(host, decision)
                self._refused = self._ended = True
                self.transport.abortConnection()
                return False
            self.peerHost = host
            if decision is not None:
                self._waiting = decision
                self._held = data
                cast(IPushProducer, self.transport).pauseProducing()
                return False
        self.peerHost = host
        return True

    def dispatchMessage(self, messageNum: int, payload: bytes | memoryview) -> None:
        # Conch's handlers parse with struct and assertions: a malformed
        # message raises out of dataReceived, which logs a traceback per
        # packet.  It ends the connection instead, with one line.
        if self._refused:
            return
        try:
            super().dispatchMessage(messageNum, payload)
        except Exception as e:
            self._malformed(e, messageNum)

    def _malformed(self, error: Exception, messageNum: int | None = None) -> None:
        self._refused = True
        log.warn(
            "Disconnecting {peer}: malformed SSH message {number}: {error}",
            peer=self.peerHost,
            number=messageNum,
            error=repr(error),
        )
        self._disconnect(DISCONNECT_PROTOCOL_ERROR, b"malformed message")

    def setService(self, service: Any) -> None:
        if service.name == b"ssh-connection" and self._user is None:
            user = getattr(self.avatar, "username", "?")
            self._user = user
            refusal = self.factory.loggedIn(self, user)
            if refusal is not None:
                log.warn(
                    "Refusing {user} from {peer}: {reason}",
                    user=user,
                    peer=self.peerHost,
                    reason=refusal,
                )
                self._user = None
                self._ended = True
                self._disconnect(DISCONNECT_TOO_MANY_CONNECTIONS, refusal.encode("ascii"))
                return
            if self._timer is not None:
                self._timer.reset(self.factory.limits.idleTimeout)
        super().setService(service)

    def _timeout(self) -> None:
        self._timer = None
        if self._waiting is not None:
            log.info(
                "Dropping {peer}: no slot within the login grace time of {grace:g} s",
                peer=self.peerHost,
                grace=self.factory.limits.loginGrace,
            )
            self._dropWaiting()
        elif self._user is None:
            self._timedOut = True
            log.info(
                "Dropping {peer}: not logged in within {grace:g} s",
                peer=self.peerHost,
                grace=self.factory.limits.loginGrace,
            )
            self._disconnect(
                DISCONNECT_NO_MORE_AUTH_METHODS_AVAILABLE, b"login grace time exceeded"
            )
        else:
            log.info(
                "Closing idle connection of {user} from {peer}",
                user=self._user,
                peer=self.peerHost,
            )
            self._disconnect(DISCONNECT_BY_APPLICATION, b"idle timeout")

    def shutDown(self) -> None:
        """
        The server is stopping: disconnect with a reason the client shows.
        """
        open = getattr(self.transport, "connected", False)
        if self._waiting is not None:
            # Nothing was said to it yet: no SSH disconnect to send.
            self._dropWaiting()
        elif open and not getattr(self.transport, "disconnecting", False):
            self._disconnect(DISCONNECT_BY_APPLICATION, b"server shutting down")

    def _dropWaiting(self) -> None:
        """
        Close a connection still in the admission queue.  It leaves the
        queue now, not when the close is noticed, so that a slot freeing
        meanwhile is not given to it (and then counted and penalised).
        """
        assert self._waiting is not None
        self._waiting.cancel()
        self._waiting = None
        self._ended = True
        self.transport.abortConnection()

    def _disconnect(self, reason: int, description: bytes) -> None:
        """
        Send a disconnect and close, and cut the connection if the peer
        does not read it within L{DISCONNECT_LINGER} seconds.
        """
        self.sendDisconnect(reason, description)
        abort = getattr(self.transport, "abortConnection", None)
        if abort is not None:
            self.factory.clock.callLater(DISCONNECT_LINGER, _abortIfOpen, self.transport)

    def connectionLost(self, reason: Failure | None = None) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self.factory.forget(self)
        if self._waiting is not None:
            # Never served: it held no slot and earned no penalty.
            self._waiting.cancel()
            self._waiting = None
            self._ended = True
        if not self._ended:
            self._ended = True
            if self._user is not None:
                self.factory.loggedOut(self, self._user)
            else:
                penalty = (
                    GRACE_EXCEEDED
                    if self._timedOut
                    else AUTH_FAILED
                    if self.authFailures
                    else NO_AUTH
                )
                self.factory.ended(self, penalty)
        super().connectionLost(reason)

    def receiveError(self, reasonCode: int, description: bytes) -> None:
        # Conch logs every disconnect from the client as an error, the
        # ordinary "disconnected by user" that ends each session included.
        if reasonCode == DISCONNECT_BY_APPLICATION:
            return
        super().receiveError(reasonCode, description)

    def sendExtInfo(self, extensions: list[tuple[bytes, bytes]]) -> None:
        super().sendExtInfo(
            [
                (name, b",".join(self.factory.policy.userSignatures))
                if name == b"server-sig-algs"
                else (name, value)
                for name, value in extensions
            ]
        )


def _abortIfOpen(transport: Any) -> None:
    if getattr(transport, "connected", False) and not getattr(transport, "disconnected", False):
        transport.abortConnection()


class RefusalLog:
    """
    Refused connections, logged in summaries: at most one line per
    C{interval}, counting every refusal since the last line by reason; the
    first comes at once, and a timer writes the rest, so the end of a
    burst is not lost.  One log serves a factory and its L{behindProxy}
    copy.
    """

    def __init__(self, clock: IReactorTime, interval: float) -> None:
        self.clock = clock
        self.interval = interval
        self._counts: Counter[str] = Counter()
        self._latest = ""
        self._logged = float("-inf")
        self._timer: IDelayedCall | None = None

    def count(self, host: str, reason: str) -> None:
        """
        A connection from C{host} was refused for C{reason}.
        """
        self._counts[reason] += 1
        self._latest = host
        if self._timer is None:
            delay = max(0.0, self._logged + self.interval - self.clock.seconds())
            self._timer = self.clock.callLater(delay, self._write)

    def flush(self) -> None:
        """
        Write what is counted now (at shutdown).
        """
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
            self._write()

    def _write(self) -> None:
        self._timer = None
        counts = Counter(self._counts)
        self._counts.clear()
        self._logged = self.clock.seconds()
        if not counts:
            return
        log.warn(
            "Refused {count} connection(s), latest from {host}: {reasons}",
            count=sum(counts.values()),
            host=self._latest,
            reasons="; ".join(f"{number} {reason}" for reason, number in counts.most_common()),
        )


class AcceptGate:
    """
    The listening ports of a factory (and of its L{behindProxy} copy),
    paused while connections are at the factory's cap: new connections
    then wait in the kernel's backlog instead of failing in C{accept},
    which Twisted would retry at once (a spinning reactor).

    @ivar ports: the ports.
    @ivar paused: whether they are paused.
    """

    def __init__(self) -> None:
        self.ports: list[Any] = []
        self.paused = False

    def pause(self, count: int) -> None:
        """
        Stop accepting, with C{count} connections open.
        """
        if self.paused:
            return
        self.paused = True
        log.warn(
            "Not accepting connections for now: {count} open, the most the open files limit allows",
            count=count,
        )
        for port in self.ports:
            stop = getattr(port, "stopReading", None)
            if stop is not None:
                stop()

    def resume(self) -> None:
        """
        Accept again, on the ports still listening.
        """
        self.paused = False
        log.info("Accepting connections again")
        for port in self.ports:
            # A port closed (or closing) at a shutdown stays closed.
            listening = getattr(port, "connected", False) and not getattr(
                port, "disconnecting", False
            )
            start = getattr(port, "startReading", None)
            if listening and start is not None:
                start()


class S3SSHFactory(SSHFactory):
    """
    The SSH server factory: admits connections and builds transports with
    the crypto policy.

    @ivar portal: authenticates users.
    @ivar limits: the limits before and after login.
    @ivar policy: the crypto policy connections are offered.
    @ivar clock: the time source for timeouts.
    @ivar admission: the connection counts and penalties.
    @ivar connections: the transports whose connection is open.
    @ivar maxConnections: the most connections open at once (queued ones
        included), sized to the open files limit; at it, accepting
        pauses.
    """

    # Conch logs a line per connection about group-exchange moduli, which
    # the policy does not offer anyway.  Keep its warnings only.
    _log = Logger(namespace="twisted.conch.ssh.factory", observer=quietObserver)

    protocol = S3ServerTransport
    services = {
        **SSHFactory.services,
        b"ssh-userauth": S3UserAuthServer,
        b"ssh-connection": S3Connection,
    }

    #: Seconds between two log lines about refused connections.
    REFUSAL_LOG_INTERVAL = 10.0

    #: Whether connections come through a PROXY-protocol load balancer.
    proxied = False

    def __init__(
        self,
        portal: Portal,
        hostKeys: dict[bytes, Key],
        limits: Limits | None = None,
        clock: IReactorTime | None = None,
        policy: CryptoPolicy = MODERN,
        maxConnections: int = 1 << 20,
    ) -> None:
        if clock is None:
            from twisted.internet import reactor

            clock = cast(IReactorTime, reactor)
        registerKeyExchanges()
        self.portal = portal
        self.privateKeys = hostKeys
        self.publicKeys = {kind: key.public() for kind, key in hostKeys.items()}
        self.limits = limits or Limits()
        self.policy = policy
        self.clock = clock
        self.admission = Admission(self.limits, clock.seconds)
        self.maxConnections = maxConnections
        # Shared with the copy behindProxy makes: one count, one set of
        # ports to pause, one refusal log.
        self.connections: set[S3ServerTransport] = set()
        self.accepting = AcceptGate()
        self._allClosed: list[Deferred[None]] = []
        self.refusals = RefusalLog(clock, self.REFUSAL_LOG_INTERVAL)

    def getDHPrime(self, bits: int) -> tuple[int, int]:
        """
        The group for a group exchange: the smallest at least as large as
        the client's ideal size, or else the largest (Conch takes the
        nearest, so a client asking for 3072 bits would get 2048).
        """
        assert self.primes, "Group exchange is offered only with moduli."
        sizes = sorted(self.primes)
        size = next((size for size in sizes if size >= bits), sizes[-1])
        return self.primes[size][0]

    def getPrimes(self) -> dict[int, list[tuple[int, int]]] | None:
        # Group exchange, when the policy offers it, uses RFC 3526's
        # groups; Conch would read a moduli file.
        if GROUP_EXCHANGE in self.policy.keyExchanges:
            return moduli()
        return None

    # Twisted lets a factory refuse a connection by returning None; Conch's
    # annotation does not say so.
    def buildProtocol(self, addr: Any) -> S3ServerTransport | None:  # type: ignore[override]
        host = None if self.proxied else getattr(addr, "host", None)
        overCap = len(self.connections) >= self.maxConnections
        if overCap:
            # Only within a batch of accepts begun before the pause.
            self.logRefusal(
                str(host or getattr(addr, "host", "?")),
                "too many connections for the open files limit",
            )
            if not self.proxied:
                return None
        transport = cast(S3ServerTransport, super().buildProtocol(addr))
        if overCap:
            # The PROXY wrapper cannot be refused a protocol: this one
            # closes the connection as soon as it is made.
            transport._overCap = True
            return transport
        if host is not None:
            decision = self.admission.admit(host, transport.admitted)
            if isinstance(decision, str):
                self.logRefusal(host, decision)
                return None
            transport._waiting = decision
        policy = self.policy
        transport.supportedKeyExchanges = list(policy.keyExchanges)
        transport.supportedCiphers = list(policy.ciphers)
        transport.supportedMACs = list(policy.macs)
        offered = set(transport.supportedPublicKeys)
        transport.supportedPublicKeys = [
            algorithm for algorithm in policy.hostKeyAlgorithms if algorithm in offered
        ]
        transport.peerHost = host
        transport.proxied = self.proxied
        self.connections.add(transport)
        if len(self.connections) >= self.maxConnections:
            self.accepting.pause(len(self.connections))
        return transport

    def portListening(self, port: Any) -> None:
        """
        A listening port serves this factory: pause it when connections
        reach L{maxConnections}.
        """
        self.accepting.ports.append(port)

    def forget(self, transport: S3ServerTransport) -> None:
        """
        C{transport}'s connection is gone.
        """
        self.connections.discard(transport)
        if self.accepting.paused and len(self.connections) < self.maxConnections * 0.9:
            self.accepting.resume()
        if not self.connections:
            # Emptied in place: the list is shared with the behindProxy copy.
            waiting = list(self._allClosed)
            self._allClosed.clear()
            for waiter in waiting:
                waiter.callback(None)

    def closeConnections(self) -> Deferred[None]:
        """
        At a shutdown, after the last upload's CLOSE has been answered:
        give clients L{SHUTDOWN_GRACE} seconds to end their sessions
        themselves (a batch client that got its last reply does so at
        once), then send those still connected an SSH disconnect ("server
        shutting down") and close them once what was written has gone out.

        A client must get that time: OpenSSH's C{ssh} exits as soon as it
        reads a disconnect, dropping replies it has not yet handed to
        C{sftp}, which then fails the transfer.

        @return: a Deferred firing when every connection has closed (each
            is cut L{DISCONNECT_LINGER} seconds after its disconnect at the
            latest).
        """
        if not self.connections:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._allClosed.append(waiter)
        later = self.clock.callLater(SHUTDOWN_GRACE, self._disconnectAll)

        def cancel(result: object) -> object:
            if later.active():
                later.cancel()
            return result

        waiter.addBoth(cancel)
        return waiter

    def _disconnectAll(self) -> None:
        for transport in list(self.connections):
            transport.shutDown()

    def behindProxy(self) -> S3SSHFactory:
        """
        @return: a factory for a listener behind a load balancer speaking
            the PROXY protocol: the same users, keys, limits and counts,
            but each connection admitted by the client's address from the
            PROXY header rather than the balancer's.
        """
        proxied = copy.copy(self)
        proxied.proxied = True
        return proxied

    def loggedIn(self, transport: S3ServerTransport, user: str) -> str | None:
        """
        C{transport} authenticated as C{user}.

        @return: why the connection must be refused, or L{None}.
        """
        if transport.peerHost is None:
            return None
        return self.admission.loggedIn(transport.peerHost, user)

    def loggedOut(self, transport: S3ServerTransport, user: str) -> None:
        """
        A logged-in connection ended.
        """
        if transport.peerHost is not None:
            self.admission.loggedOut(user)

    def ended(self, transport: S3ServerTransport, penalty: str) -> None:
        """
        A connection ended without logging in.
        """
        if transport.peerHost is not None:
            self.admission.ended(transport.peerHost, penalty)

    def logRefusal(self, host: str, reason: str) -> None:
        """
        Count a refused connection (see L{RefusalLog}).
        """
        self.refusals.count(host, reason)

    def stopFactory(self) -> None:
        self.refusals.flush()
        super().stopFactory()
