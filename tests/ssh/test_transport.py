"""
Tests for L{twisted_s3sftp.ssh.transport}: the crypto policy on the wire, the
login grace time, the idle timeout, admission and the limits on
authentication.
"""

from __future__ import annotations

import struct
import time
from statistics import median
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from twisted.conch.ssh.common import NS, getNS
from twisted.conch.ssh.keys import Key
from twisted.conch.ssh.transport import (
    DISCONNECT_BY_APPLICATION,
    DISCONNECT_NO_MORE_AUTH_METHODS_AVAILABLE,
    DISCONNECT_PROTOCOL_ERROR,
    DISCONNECT_TOO_MANY_CONNECTIONS,
)
from twisted.conch.ssh.userauth import MSG_USERAUTH_FAILURE, MSG_USERAUTH_PK_OK
from twisted.cred.portal import Portal
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from tests.ssh.test_keys import newKey as hostKey
from twisted_s3sftp.sftp.flow import MemoryLimit
from twisted_s3sftp.ssh.admission import Limits
from twisted_s3sftp.ssh.keys import KeysDirectory, KeysDirectoryChecker
from twisted_s3sftp.ssh.policy import (
    CIPHERS,
    KEY_EXCHANGES,
    MACS,
    MODERN,
    POLICIES,
    USER_SIGNATURE_ALGORITHMS,
    CryptoPolicy,
)
from twisted_s3sftp.ssh.session import S3Realm
from twisted_s3sftp.ssh.transport import (
    READ_SIZE,
    S3ServerTransport,
    S3SSHFactory,
    S3UserAuthServer,
)
from twisted_s3sftp.store.memory import MemoryObjectStore
from twisted_s3sftp.store.parts import MiB, UploadPolicy


def kexInit(sent: bytes) -> list[list[bytes]]:
    """
    @param sent: what a transport wrote: its version line, then its
        KEXINIT packet in the clear.
    @return: the KEXINIT's ten name-lists.
    """
    packet = sent.split(b"\r\n", 1)[1]
    (length, padding) = struct.unpack(">LB", packet[:5])
    payload = packet[5 : 4 + length - padding]
    assert payload[0] == 20, payload[:1]
    rest = payload[17:]
    lists = []
    for _ in range(10):
        names, rest = getNS(rest)
        lists.append(names.split(b",") if names else [])
    return lists


class Harness:
    """
    A factory and the transports it builds, on a fake clock.
    """

    def __init__(
        self,
        test: SynchronousTestCase,
        keys: dict[bytes, Key] | None = None,
        policy: CryptoPolicy = MODERN,
        **limits: Any,
    ) -> None:
        self.clock = Clock()
        self.keysDir = FilePath(test.mktemp())
        self.keysDir.makedirs()
        realm = S3Realm(
            MemoryObjectStore(),
            "{username}/",
            UploadPolicy(partSize=5 * MiB, bufferLimit=16 * MiB, concurrency=2),
            MemoryLimit(64 * MiB),
            self.clock,
        )
        self.portal = Portal(realm, [KeysDirectoryChecker(KeysDirectory(self.keysDir, policy))])
        self.factory = S3SSHFactory(
            self.portal, keys or {b"ssh-ed25519": hostKey()}, Limits(**limits), self.clock, policy
        )
        self.factory.startFactory()

    def addUser(self, name: str, key: Key) -> None:
        """
        Give user C{name} the public half of C{key}, in a file the keys
        directory accepts (mode 0644).
        """
        keyFile = self.keysDir.child(f"{name}.pub")
        keyFile.setContent(key.public().toString("openssh") + b"\n")
        keyFile.chmod(0o644)

    def connect(self, host: str = "10.0.0.1") -> tuple[S3ServerTransport, StringTransport] | None:
        """
        @return: a connected server transport and its fake TCP transport,
            or L{None} if the factory refused the connection.
        """
        protocol = self.factory.buildProtocol(IPv4Address("TCP", host, 40000))
        if protocol is None:
            return None
        tcp = StringTransport(peerAddress=IPv4Address("TCP", host, 40000))
        protocol.makeConnection(tcp)
        return protocol, tcp


class Disconnects:
    """
    Records the disconnect reasons a transport sends.
    """

    def __init__(self, transport: S3ServerTransport) -> None:
        self.reasons: list[int] = []
        original = transport.sendDisconnect

        def record(reason: int, description: bytes) -> None:
            self.reasons.append(reason)
            original(reason, description)

        transport.sendDisconnect = record  # type: ignore[method-assign]


class PolicyTests(SynchronousTestCase):
    """
    The server offers exactly the policy's algorithms.
    """

    def test_offered(self) -> None:
        """
        KEXINIT lists the policy's key exchanges (and the markers of
        strict key exchange and of C{ext-info-s}), the ed25519 host key,
        its ciphers and MACs both ways, and no compression.
        """
        harness = Harness(self)
        connected = harness.connect()
        assert connected is not None
        lists = kexInit(connected[1].value())
        self.assertEqual(lists[0], [*KEY_EXCHANGES, b"kex-strict-s-v00@openssh.com", b"ext-info-s"])
        self.assertEqual(lists[1], [b"ssh-ed25519"])
        self.assertEqual(lists[2:4], [list(CIPHERS)] * 2)
        self.assertEqual(lists[4:6], [list(MACS)] * 2)
        self.assertEqual(lists[6:8], [[b"none"]] * 2)

    def test_rsaHostKey(self) -> None:
        """
        An RSA host key is offered with SHA-2 signatures only, never
        C{ssh-rsa} (SHA-1).
        """
        keys = {b"ssh-ed25519": hostKey(), b"ssh-rsa": Key(rsa.generate_private_key(65537, 3072))}
        connected = Harness(self, keys).connect()
        assert connected is not None
        self.assertEqual(
            kexInit(connected[1].value())[1], [b"ssh-ed25519", b"rsa-sha2-512", b"rsa-sha2-256"]
        )


class TimeoutTests(SynchronousTestCase):
    """
    Connections are timed from TCP accept to login, and once logged in
    while they are silent.
    """

    def test_loginGrace(self) -> None:
        """
        A connection that has not logged in within the grace time (here
        one that never got past the banner) is disconnected and costs its
        source the grace penalty.
        """
        harness = Harness(self, loginGrace=2)
        transport, tcp = harness.connect() or (None, None)
        assert transport is not None and tcp is not None
        disconnects = Disconnects(transport)
        harness.clock.advance(1.9)
        self.assertFalse(tcp.disconnecting)
        harness.clock.advance(0.1)
        self.assertEqual(disconnects.reasons, [DISCONNECT_NO_MORE_AUTH_METHODS_AVAILABLE])
        self.assertTrue(tcp.disconnecting)
        transport.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(harness.factory.admission.unauthenticated, 0)
        # 10 s of penalty each: after a second one (18 s outstanding) the
        # source is refused, and only that source.
        for _ in range(1):
            transport, _ = harness.connect() or (None, None)
            assert transport is not None
            harness.clock.advance(2)
            transport.connectionLost(Failure(ConnectionDone()))
        self.assertIsNone(harness.connect())
        self.assertIsNotNone(harness.connect("10.0.0.2"))

    def test_idleTimeout(self) -> None:
        """
        Once logged in, a connection is closed after the idle timeout
        without data from the client; data restarts the count.
        """
        harness = Harness(self, idleTimeout=100)
        transport, tcp = harness.connect() or (None, None)
        assert transport is not None and tcp is not None
        loggedIn(transport, "alice")
        disconnects = Disconnects(transport)
        harness.clock.advance(99)
        transport.dataReceived(b"")
        harness.clock.advance(99)
        self.assertEqual(disconnects.reasons, [])
        harness.clock.advance(1)
        self.assertEqual(disconnects.reasons, [DISCONNECT_BY_APPLICATION])

    def test_disconnectLinger(self) -> None:
        """
        A client that does not read the disconnect message is cut off a
        few seconds later.
        """
        harness = Harness(self, loginGrace=1)
        transport, tcp = harness.connect() or (None, None)
        assert transport is not None
        aborted: list[bool] = []
        tcp.connected = True  # type: ignore[union-attr]
        tcp.abortConnection = lambda: aborted.append(True)  # type: ignore[union-attr]
        harness.clock.advance(1)
        harness.clock.advance(5)
        self.assertEqual(aborted, [True])


class QuietTests(SynchronousTestCase):
    """
    Ordinary events are not logged as errors.
    """

    def test_clientDisconnect(self) -> None:
        """
        A client's "disconnected by user" is not an error; any other
        disconnect reason still is.
        """
        connected = Harness(self).connect()
        assert connected is not None
        transport = connected[0]
        errors: list[object] = []
        from twisted.logger import LogLevel, globalLogPublisher

        def observer(event: dict[str, object]) -> None:
            if event.get("log_level") == LogLevel.error:
                errors.append(event)

        globalLogPublisher.addObserver(observer)
        try:
            transport.receiveError(DISCONNECT_BY_APPLICATION, b"disconnected by user")
            self.assertEqual(errors, [])
            transport.receiveError(DISCONNECT_NO_MORE_AUTH_METHODS_AVAILABLE, b"gave up")
            self.assertEqual(len(errors), 1)
        finally:
            globalLogPublisher.removeObserver(observer)


class MalformedTests(SynchronousTestCase):
    """
    Malformed SSH messages end the connection quietly.
    """

    def test_malformedKexInit(self) -> None:
        """
        A KEXINIT whose name-lists run past its end (Conch's parser raises
        C{struct.error}) disconnects with a protocol error and one warning,
        not a traceback; nothing after it is handled.
        """
        from tests.test_fuzz import kexInitPacket

        connected = Harness(self).connect()
        assert connected is not None
        transport, tcp = connected
        disconnects = Disconnects(transport)
        packet = bytearray(kexInitPacket([b"curve25519-sha256"] + [b"none"] * 9))
        packet[25] = 0xFF
        transport.dataReceived(b"SSH-2.0-bad\r\n" + bytes(packet) + bytes(packet))
        self.assertEqual(disconnects.reasons, [DISCONNECT_PROTOCOL_ERROR])
        self.assertTrue(tcp.disconnecting)
        self.assertEqual(self.flushLoggedErrors(), [])


class Service:
    """
    The connection service as the transport sees it.
    """

    name = b"ssh-connection"

    def serviceStarted(self) -> None:
        pass

    def serviceStopped(self) -> None:
        pass


def loggedIn(transport: S3ServerTransport, username: str) -> None:
    """
    Make C{transport} act as if C{username} just authenticated.
    """

    class Avatar:
        pass

    avatar = Avatar()
    avatar.username = username  # type: ignore[attr-defined]
    transport.avatar = avatar
    transport.logoutFunction = lambda: None
    transport.setService(Service())


class AdmissionTests(SynchronousTestCase):
    """
    The factory admits connections through L{Admission}.
    """

    def test_perSourceStartups(self) -> None:
        """
        Past the per-source cap on unauthenticated connections, a
        connection is accepted but waits: nothing is read from it and no
        banner is sent until a slot frees.  Its grace time runs from
        accept; dropped unserved, it costs no penalty.
        """
        harness = Harness(self, perSourceStartups=1, loginGrace=10)
        first, _ = harness.connect() or (None, None)
        assert first is not None
        second, tcp = harness.connect() or (None, None)
        assert second is not None and tcp is not None
        self.assertEqual((tcp.value(), tcp.producerState), (b"", "paused"))
        first.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(tcp.producerState, "producing")
        self.assertTrue(tcp.value().startswith(b"SSH-2.0-"))
        third, tcp = harness.connect() or (None, None)
        assert third is not None and tcp is not None
        aborted: list[bool] = []
        tcp.abortConnection = lambda: aborted.append(True)  # type: ignore[method-assign]
        penalties = dict(harness.factory.admission._penalties)
        harness.clock.advance(10)
        self.assertEqual((tcp.value(), aborted), (b"", [True]))
        third.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(harness.factory.admission.queued, 0)
        self.assertEqual(harness.factory.admission._penalties, penalties)

    def test_refusalSummary(self) -> None:
        """
        Beyond the queue's bounds connections are refused (no protocol
        is built), and the log counts every refusal by reason, in one line
        per interval: the first at once, the rest in the next line.
        """
        harness = Harness(self, perSourceStartups=1, perSourceQueue=1)
        self.assertIsNotNone(harness.connect())
        self.assertIsNotNone(harness.connect())
        messages: list[str] = []
        from twisted.logger import formatEvent, globalLogPublisher

        observer = lambda event: messages.append(formatEvent(event))  # noqa: E731
        globalLogPublisher.addObserver(observer)
        try:
            for _ in range(50):
                self.assertIsNone(harness.connect())
            harness.clock.advance(0)
            for _ in range(10):
                self.assertIsNone(harness.connect())
            harness.clock.advance(harness.factory.REFUSAL_LOG_INTERVAL)
        finally:
            globalLogPublisher.removeObserver(observer)
        refused = [m for m in messages if m.startswith("Refused")]
        self.assertEqual(
            refused,
            [
                "Refused 50 connection(s), latest from 10.0.0.1: "
                "50 too many connections waiting from this source",
                "Refused 10 connection(s), latest from 10.0.0.1: "
                "10 too many connections waiting from this source",
            ],
        )
        self.assertIsNotNone(harness.connect("10.0.0.2"))

    def test_descriptorCap(self) -> None:
        """
        At C{maxConnections} open connections the factory pauses its
        listening ports, and resumes them once connections have closed.
        """

        class Port:
            reading = True
            connected = True
            disconnecting = False

            def stopReading(self) -> None:
                self.reading = False

            def startReading(self) -> None:
                self.reading = True

        harness = Harness(self)
        harness.factory.maxConnections = 3
        port = Port()
        harness.factory.portListening(port)
        transports = [harness.connect(f"10.0.0.{n}") for n in range(3)]
        self.assertFalse(port.reading)
        self.assertIsNone(harness.connect("10.0.0.9"))
        for connected in transports:
            assert connected is not None
            connected[0].connectionLost(Failure(ConnectionDone()))
        self.assertTrue(port.reading)
        self.assertIsNotNone(harness.connect("10.0.0.9"))
        # Behind a PROXY header a protocol must be built: past the cap, it
        # closes its connection at once.
        harness.factory.maxConnections = 1
        proxied = harness.factory.behindProxy()
        protocol = proxied.buildProtocol(IPv4Address("TCP", "10.0.0.1", 40000))
        assert protocol is not None
        tcp = StringTransport()
        aborted: list[bool] = []
        tcp.abortConnection = lambda: aborted.append(True)  # type: ignore[method-assign]
        protocol.makeConnection(tcp)
        self.assertEqual((aborted, tcp.value()), ([True], b""))
        protocol.connectionLost(Failure(ConnectionDone()))
        # A port closed at a shutdown is not restarted.
        port.connected = False
        port.reading = False
        harness.factory.accepting.paused = True
        harness.factory.forget(protocol)
        self.assertFalse(port.reading)

    def test_droppedWhileWaiting(self) -> None:
        """
        A queued connection dropped at its grace time leaves the queue at
        once: a slot freeing before its close is noticed goes to the next
        one, and the dropped one is neither served nor penalised.
        """
        harness = Harness(self, perSourceStartups=1, loginGrace=10)
        first, _ = harness.connect() or (None, None)
        assert first is not None
        harness.clock.advance(1)
        late, lateTCP = harness.connect() or (None, None)
        assert late is not None and lateTCP is not None
        lateTCP.abortConnection = lambda: None  # type: ignore[method-assign]
        harness.clock.advance(1)
        waiting, tcp = harness.connect() or (None, None)
        assert waiting is not None and tcp is not None
        # The first connection's grace ends (t=10), then the queued late
        # one's (t=11), whose close the reactor has not reported yet when
        # the first one's slot frees.
        harness.clock.advance(9)
        first.connectionLost(Failure(ConnectionDone()))
        self.assertEqual((tcp.producerState, lateTCP.value()), ("producing", b""))
        late.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(harness.factory.admission.unauthenticated, 1)
        # Only the first connection's grace penalty, none for the late one.
        penalty = harness.factory.admission._penalties["10.0.0.1"]
        self.assertEqual(penalty, harness.clock.seconds() + harness.factory.limits.gracePenalty)

    def test_perUser(self) -> None:
        """
        A login past the user's connection cap is disconnected with
        "too many connections"; logging out frees a place.
        """
        harness = Harness(self, perUser=1)
        first, _ = harness.connect() or (None, None)
        second, _ = harness.connect() or (None, None)
        assert first is not None and second is not None
        loggedIn(first, "alice")
        disconnects = Disconnects(second)
        loggedIn(second, "alice")
        self.assertEqual(disconnects.reasons, [DISCONNECT_TOO_MANY_CONNECTIONS])
        second.connectionLost(Failure(ConnectionDone()))
        first.connectionLost(Failure(ConnectionDone()))
        third, _ = harness.connect() or (None, None)
        assert third is not None
        disconnects = Disconnects(third)
        loggedIn(third, "alice")
        self.assertEqual(disconnects.reasons, [])


class FakeTransport:
    """
    What L{S3UserAuthServer} uses of its transport.
    """

    authFailures = 0

    def __init__(self, factory: S3SSHFactory) -> None:
        self.factory = factory
        self.sessionID = b"session"
        self.packets: list[tuple[int, bytes]] = []
        self.disconnects: list[int] = []

    def isEncrypted(self, direction: str) -> bool:
        return True

    def sendPacket(self, kind: int, payload: bytes) -> None:
        self.packets.append((kind, payload))

    def sendDisconnect(self, reason: int, description: bytes) -> None:
        self.disconnects.append(reason)


class AuthenticationTests(SynchronousTestCase):
    """
    L{S3UserAuthServer} with the keys directory checker.
    """

    def setUp(self) -> None:
        self.harness = Harness(self, maxAuthTries=6)
        self.key = hostKey()
        self.harness.addUser("alice", self.key)
        self.transport = FakeTransport(self.harness.factory)
        self.auth = S3UserAuthServer()
        self.auth.transport = self.transport  # type: ignore[assignment]
        self.auth.serviceStarted()
        self.addCleanup(self.auth.serviceStopped)

    def attempt(self, user: bytes, key: Key, signed: bool = True) -> tuple[int, bytes]:
        """
        Send one publickey request and return the reply.
        """
        blob = key.public().blob()
        body = NS(user) + NS(b"ssh-connection") + NS(b"publickey")
        if signed:
            signed_data = (
                NS(self.transport.sessionID)
                + bytes([50])
                + body
                + b"\x01"
                + NS(b"ssh-ed25519")
                + NS(blob)
            )
            packet = body + b"\x01" + NS(b"ssh-ed25519") + NS(blob) + NS(key.sign(signed_data))
        else:
            packet = body + b"\x00" + NS(b"ssh-ed25519") + NS(blob)
        before = len(self.transport.packets)
        self.auth.ssh_USERAUTH_REQUEST(packet)
        sent = self.transport.packets[before:]
        return sent[0] if sent else (0, b"")

    def test_maxAuthTries(self) -> None:
        """
        The sixth failed attempt disconnects instead of answering; each
        failure is counted on the transport for the penalty.
        """
        for _ in range(5):
            self.assertEqual(self.attempt(b"alice", hostKey())[0], MSG_USERAUTH_FAILURE)
        self.assertEqual(self.transport.disconnects, [])
        self.attempt(b"alice", hostKey())
        self.assertEqual(self.transport.disconnects, [DISCONNECT_NO_MORE_AUTH_METHODS_AVAILABLE])
        self.assertEqual(self.transport.authFailures, 6)

    def test_restartedServiceKeepsCount(self) -> None:
        """
        Failures are counted per connection, not per start of the
        authentication service (paramiko restarts it for every attempt).
        """
        for _ in range(5):
            self.auth = S3UserAuthServer()
            self.auth.transport = self.transport  # type: ignore[assignment]
            self.auth.serviceStarted()
            self.assertEqual(self.attempt(b"alice", hostKey())[0], MSG_USERAUTH_FAILURE)
            self.auth.serviceStopped()
        self.auth = S3UserAuthServer()
        self.auth.transport = self.transport  # type: ignore[assignment]
        self.auth.serviceStarted()
        self.attempt(b"alice", hostKey())
        self.assertEqual(self.transport.disconnects, [DISCONNECT_NO_MORE_AUTH_METHODS_AVAILABLE])

    def test_queries(self) -> None:
        """
        A query for a listed key gets "key OK"; for any other key, or any
        key of an unknown user, the same failure as a wrong signature.
        """
        self.assertEqual(self.attempt(b"alice", self.key, signed=False)[0], MSG_USERAUTH_PK_OK)
        unknownKey = self.attempt(b"alice", hostKey(), signed=False)
        unknownUser = self.attempt(b"mallory", hostKey(), signed=False)
        self.assertEqual(unknownKey, unknownUser)
        self.assertEqual(unknownKey[0], MSG_USERAUTH_FAILURE)

    def test_keyOptionsByPeer(self) -> None:
        """
        The checker judges C{from=} by the transport's client address: from
        another address, a query for the key gets exactly the reply an
        unknown key gets, never "key OK"; from a matching one, "key OK"
        and a login.
        """
        keyFile = self.harness.keysDir.child("alice.pub")
        keyFile.setContent(b'from="192.0.2.0/24" ' + self.key.public().toString("openssh") + b"\n")
        self.transport.peerHost = "10.0.0.1"  # type: ignore[attr-defined]
        refused = self.attempt(b"alice", self.key, signed=False)
        self.assertEqual(refused, self.attempt(b"alice", hostKey(), signed=False))
        self.assertEqual(refused[0], MSG_USERAUTH_FAILURE)
        self.assertEqual(self.attempt(b"alice", self.key)[0], MSG_USERAUTH_FAILURE)
        self.transport.peerHost = "192.0.2.9"  # type: ignore[attr-defined]
        self.assertEqual(self.attempt(b"alice", self.key, signed=False)[0], MSG_USERAUTH_PK_OK)

    def test_noEnumeration(self) -> None:
        """
        Interleaved attempts for an existing user with a wrong key and for
        unknown users get byte-identical replies, and take the same time:
        the medians of 200 of each differ by less than a millisecond
        (both are a file lookup of a few microseconds).
        """
        timings: dict[str, list[float]] = {"known": [], "unknown": []}
        replies: dict[str, set[tuple[int, bytes]]] = {"known": set(), "unknown": set()}
        wrong = hostKey()
        for n in range(200):
            for kind, user in (("known", b"alice"), ("unknown", b"u%d" % (n,))):
                # The attempt cap must not end the run.
                self.transport.authFailures = 0
                start = time.perf_counter()
                reply = self.attempt(user, wrong)
                timings[kind].append(time.perf_counter() - start)
                replies[kind].add(reply)
        self.assertEqual(replies["known"], replies["unknown"])
        self.assertEqual(len(replies["known"]), 1)
        self.assertLess(abs(median(timings["known"]) - median(timings["unknown"])), 0.001)


class LoopbackLoginTests(SynchronousTestCase):
    """
    A whole login in memory, with Conch's own client: key exchange, host
    key, public key authentication, the connection service.
    """

    def test_login(self) -> None:
        """
        A listed key logs in.  (Conch's client has no ML-KEM; the
        post-quantum exchange is tested with AsyncSSH in the integration
        run.)
        """
        harness = Harness(self)
        key = hostKey()
        harness.addUser("alice", key)
        client = loginOverLoopback(harness, key, b"alice")
        self.assertTrue(client.loggedIn)
        self.assertEqual(client.kexAlg, b"curve25519-sha256")

    def test_wrongKey(self) -> None:
        """
        An unlisted key does not log in.
        """
        harness = Harness(self)
        client = loginOverLoopback(harness, hostKey(), b"alice")
        self.assertFalse(client.loggedIn)


def loginOverLoopback(harness: Harness, key: Key, user: bytes) -> Any:
    """
    Log in to C{harness}'s factory over an in-memory relay.

    @return: the client transport; its C{loggedIn} says whether the
        connection service started.
    """
    from twisted.conch.ssh.connection import SSHConnection
    from twisted.conch.ssh.transport import SSHClientTransport
    from twisted.conch.ssh.userauth import SSHUserAuthClient
    from twisted.internet.defer import succeed
    from twisted.test.iosim import FakeTransport, connect

    class ClientConnection(SSHConnection):
        def serviceStarted(self) -> None:
            self.transport.loggedIn = True

    class AuthClient(SSHUserAuthClient):
        def getPublicKey(self) -> Any:
            if self.lastPublicKey is not None:
                return None
            return key.public()

        def getPrivateKey(self) -> Any:
            return succeed(key)

    class ClientTransport(SSHClientTransport):
        loggedIn = False

        def verifyHostKey(self, hostKey: bytes, fingerprint: bytes) -> Any:
            return succeed(True)

        def connectionSecure(self) -> None:
            self.requestService(AuthClient(user, ClientConnection()))

    server = harness.factory.buildProtocol(IPv4Address("TCP", "10.0.0.9", 40000))
    assert server is not None
    client = ClientTransport()
    pump = connect(
        server, FakeTransport(server, isServer=True), client, FakeTransport(client, isServer=False)
    )
    pump.flush()
    return client


class ProxiedTests(SynchronousTestCase):
    """
    Behind a load balancer speaking the PROXY protocol, connections are
    admitted by the client's address from the header.
    """

    def connect(self, factory: S3SSHFactory, client: str) -> tuple[Any, list[bool]]:
        """
        Connect through a balancer at 10.0.0.1 for C{client}, and send the
        first bytes (as the PROXY wrapper does once the header is read).

        @return: the transport and a list that records an abort.
        """
        protocol = factory.buildProtocol(IPv4Address("TCP", "10.0.0.1", 40000))
        assert protocol is not None
        tcp = StringTransport(peerAddress=IPv4Address("TCP", "10.0.0.1", 40000))
        aborted: list[bool] = []
        tcp.abortConnection = lambda: aborted.append(True)  # type: ignore[method-assign]
        protocol.makeConnection(tcp)
        tcp.peerAddr = IPv4Address("TCP", client, 5555)
        protocol.dataReceived(b"SSH-2.0-client\r\n")
        return protocol, aborted

    def test_admittedByClientAddress(self) -> None:
        """
        The per-source cap applies to the clients behind the balancer, not
        to the balancer; the audit source is the client's address; a
        client over the cap waits with what it sent until served.
        """
        harness = Harness(self, perSourceStartups=1)
        proxied = harness.factory.behindProxy()
        first, aborted = self.connect(proxied, "192.0.2.1")
        self.assertEqual((first.peerHost, aborted), ("192.0.2.1", []))
        second, aborted = self.connect(proxied, "192.0.2.2")
        self.assertEqual((second.peerHost, aborted), ("192.0.2.2", []))
        third, aborted = self.connect(proxied, "192.0.2.1")
        self.assertEqual((aborted, third.gotVersion), ([], False))
        self.assertEqual(harness.factory.admission.queued, 1)
        # Once 192.0.2.1's first connection ends, the third is served, and
        # what it sent while it waited is read.
        first.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(third.otherVersionString, b"SSH-2.0-client")
        self.assertEqual(harness.factory.admission.unauthenticated, 2)
        third.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(harness.factory.admission.unauthenticated, 1)
        self.assertIsNotNone(harness.connect("10.0.0.1"))


class TransportTests(SynchronousTestCase):
    """
    L{S3ServerTransport} advertises user signature algorithms.
    """

    def test_serverSigAlgs(self) -> None:
        """
        C{server-sig-algs} lists the algorithms the crypto policy accepts
        for user keys, whatever the host keys are (twisted#12107).
        """
        for policy in POLICIES.values():
            sent: list[Any] = []
            transport = S3ServerTransport()
            transport.factory = Harness(self, policy=policy).factory
            transport._peerSupportsExtensions = True
            transport.sendPacket = lambda kind, payload, sent=sent: sent.append(payload)  # type: ignore[method-assign]
            transport.sendExtInfo([(b"server-sig-algs", b"ssh-ed25519"), (b"other", b"1")])
            self.assertIn(b",".join(policy.userSignatures), sent[0])
            self.assertIn(b"rsa-sha2-256", sent[0])
            self.assertIn(b"other", sent[0])
        self.assertIn(b",".join(USER_SIGNATURE_ALGORITHMS), sent[0])


class TransportSocketTests(SynchronousTestCase):
    """
    Connections have Nagle's algorithm turned off and read in large
    chunks.
    """

    def test_tcpNoDelay(self) -> None:
        """
        L{S3ServerTransport} sets C{TCP_NODELAY} and a 256 KiB read size
        when the connection is made.
        """
        key = Key(Ed25519PrivateKey.generate())
        factory = S3SSHFactory(Portal(None), {b"ssh-ed25519": key}, clock=Clock())  # type: ignore[arg-type]
        factory.startFactory()
        protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 2222))
        calls: list[bool] = []

        class NoDelayTransport(StringTransport):
            def setTcpNoDelay(self, enabled: bool) -> None:
                calls.append(enabled)

        transport = NoDelayTransport()
        transport.bufferSize = 65536  # type: ignore[attr-defined]
        protocol.makeConnection(transport)
        self.assertEqual(calls, [True])
        self.assertEqual(transport.bufferSize, READ_SIZE)  # type: ignore[attr-defined]
        factory.stopFactory()


class ShutdownTests(SynchronousTestCase):
    """
    At a shutdown, connections are closed with an SSH disconnect after a
    grace for clients to end their sessions themselves.
    """

    def test_graceThenDisconnect(self) -> None:
        """
        Clients get L{SHUTDOWN_GRACE} seconds; those still connected then
        get C{server shutting down}, and the Deferred fires once all are
        closed.
        """
        from twisted_s3sftp.ssh.transport import SHUTDOWN_GRACE

        harness = Harness(self)
        first, second = harness.connect(), harness.connect("10.0.0.2")
        assert first is not None and second is not None
        records = [Disconnects(first[0]), Disconnects(second[0])]
        closed = harness.factory.closeConnections()
        # The first client ends its session during the grace.
        first[0].connectionLost(Failure(ConnectionDone()))
        harness.clock.advance(SHUTDOWN_GRACE)
        self.assertEqual([r.reasons for r in records], [[], [DISCONNECT_BY_APPLICATION]])
        self.assertIn(b"server shutting down", second[1].value())
        self.assertNoResult(closed)
        second[0].connectionLost(Failure(ConnectionDone()))
        self.successResultOf(closed)

    def test_proxiedCopyShares(self) -> None:
        """
        Connections of the PROXY-protocol copy of the factory count among
        the factory's: the wait for all to close ends when the last of
        them closes, whichever factory built it, and only once.
        """
        harness = Harness(self)
        proxied = harness.factory.behindProxy()
        behind = proxied.buildProtocol(IPv4Address("TCP", "10.0.0.1", 40000))
        assert behind is not None
        behind.makeConnection(StringTransport())
        closed = harness.factory.closeConnections()
        behind.connectionLost(Failure(ConnectionDone()))
        self.successResultOf(closed)
        direct = harness.connect()
        assert direct is not None
        again = harness.factory.closeConnections()
        direct[0].connectionLost(Failure(ConnectionDone()))
        self.successResultOf(again)

    def test_nothingOpen(self) -> None:
        """
        With no connection open, there is nothing to wait for.
        """
        self.successResultOf(Harness(self).factory.closeConnections())
