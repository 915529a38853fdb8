"""
Tests for L{twisted_s3sftp.ssh.packets}: negotiation with AEAD ciphers,
framing with each protection, and strict key exchange, at the packet level
on an in-memory transport.
"""

from __future__ import annotations

import struct

from twisted.conch.ssh.common import NS
from twisted.conch.ssh.connection import MSG_CHANNEL_DATA
from twisted.conch.ssh.transport import (
    DISCONNECT_KEY_EXCHANGE_FAILED,
    DISCONNECT_MAC_ERROR,
    DISCONNECT_PROTOCOL_ERROR,
    MSG_IGNORE,
    MSG_NEWKEYS,
    MSG_UNIMPLEMENTED,
)
from twisted.trial.unittest import SynchronousTestCase

from tests.ssh.test_transport import Disconnects, Harness
from twisted_s3sftp.ssh.ciphers import IMPLICIT_MAC, PacketCiphers
from twisted_s3sftp.ssh.packets import STRICT_KEX_CLIENT, PacketTransport, RandomPadding

#: A client's name-lists: what OpenSSH offers, cut to what matters here.
LISTS = [
    b"curve25519-sha256,ext-info-c",
    b"ssh-ed25519",
    b"aes128-gcm@openssh.com",
    b"aes128-gcm@openssh.com",
    b"umac-128@openssh.com",
    b"umac-128@openssh.com",
    b"none",
    b"none",
    b"",
    b"",
]


def clearPacket(payload: bytes) -> bytes:
    """
    @return: C{payload} framed as an SSH packet before any key exchange
        (no cipher, no MAC, 8-byte alignment).
    """
    padding = 8 - (len(payload) + 5) % 8
    if padding < 4:
        padding += 8
    return struct.pack(">LB", len(payload) + padding + 1, padding) + payload + b"\x00" * padding


def kexInit(lists: list[bytes], strict: bool = False) -> bytes:
    """
    @return: a client KEXINIT packet in the clear.
    """
    lists = list(lists)
    if strict:
        lists[0] += b"," + STRICT_KEX_CLIENT
    return clearPacket(b"\x14" + bytes(16) + b"".join(NS(names) for names in lists) + bytes(5))


def clearPackets(data: bytes) -> list[bytes]:
    """
    @return: the payloads of the clear packets a server wrote, after its
        version line.
    """
    data = data.split(b"\r\n", 1)[1]
    payloads = []
    while data:
        length, padding = struct.unpack(">LB", data[:5])
        payloads.append(data[5 : 4 + length - padding])
        data = data[4 + length :]
    return payloads


class Connected:
    """
    A server transport from L{Harness}, its fake TCP transport and the
    disconnects it sends.
    """

    def __init__(self, test: SynchronousTestCase) -> None:
        connected = Harness(test).connect()
        assert connected is not None
        self.transport, self.tcp = connected
        self.disconnects = Disconnects(self.transport)

    def receive(self, *packets: bytes) -> None:
        self.transport.dataReceived(b"SSH-2.0-OpenSSH_9.9\r\n" + b"".join(packets))


class NegotiationTests(SynchronousTestCase):
    """
    A direction with an AEAD cipher needs no MAC in common.
    """

    def test_aeadNeedsNoMAC(self) -> None:
        """
        A client offering AES-GCM and only MACs the server lacks (as a
        hardened client may) negotiates AES-GCM with the implicit MAC.
        """
        connected = Connected(self)
        connected.receive(kexInit(LISTS))
        self.assertEqual(connected.disconnects.reasons, [])
        ciphers = connected.transport.nextEncryptions
        self.assertIsInstance(ciphers, PacketCiphers)
        self.assertEqual(
            (ciphers.outCipType, ciphers.inCipType, ciphers.outMACType, ciphers.inMACType),
            (b"aes128-gcm@openssh.com",) * 2 + (IMPLICIT_MAC,) * 2,
        )

    def test_ctrNeedsMAC(self) -> None:
        """
        With AES-CTR, a MAC must still be in common.
        """
        lists = list(LISTS)
        lists[2:4] = [b"aes128-ctr"] * 2
        connected = Connected(self)
        connected.receive(kexInit(lists))
        self.assertEqual(connected.disconnects.reasons, [DISCONNECT_KEY_EXCHANGE_FAILED])

    def test_eachDirection(self) -> None:
        """
        The directions are negotiated apart: AES-GCM one way, AES-CTR with
        an encrypt-then-MAC MAC the other.
        """
        lists = list(LISTS)
        lists[2] = b"aes128-ctr"
        lists[4] = b"hmac-sha2-256-etm@openssh.com"
        connected = Connected(self)
        connected.receive(kexInit(lists))
        ciphers = connected.transport.nextEncryptions
        self.assertEqual((ciphers.inCipType, ciphers.inMACType), (b"aes128-ctr", lists[4]))
        self.assertEqual(
            (ciphers.outCipType, ciphers.outMACType), (b"aes128-gcm@openssh.com", IMPLICIT_MAC)
        )

    def test_unimplementedNamesItsPacket(self) -> None:
        """
        UNIMPLEMENTED names the sequence number of the packet it answers:
        1 for the packet after the KEXINIT (Conch would say 2).
        """
        connected = Connected(self)
        connected.receive(kexInit(LISTS), clearPacket(b"\x0f"))
        replies = clearPackets(connected.tcp.value())
        self.assertEqual(replies[-1], bytes((MSG_UNIMPLEMENTED,)) + struct.pack(">L", 1))


class StrictKexTests(SynchronousTestCase):
    """
    Strict key exchange, when the client asks for it.
    """

    def test_ignoreDuringFirstExchange(self) -> None:
        """
        An IGNORE before the client's first NEWKEYS ends the connection;
        one warning is logged, no traceback.
        """
        connected = Connected(self)
        connected.receive(kexInit(LISTS, strict=True), clearPacket(bytes((MSG_IGNORE,)) + NS(b"")))
        self.assertTrue(connected.transport.strictKex)
        self.assertEqual(connected.disconnects.reasons, [DISCONNECT_PROTOCOL_ERROR])
        self.assertTrue(connected.tcp.disconnecting)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_ignoreWithoutStrict(self) -> None:
        """
        Without the client's marker, an IGNORE is ignored, as RFC 4253
        allows at any time.
        """
        connected = Connected(self)
        connected.receive(kexInit(LISTS), clearPacket(bytes((MSG_IGNORE,)) + NS(b"")))
        self.assertFalse(connected.transport.strictKex)
        self.assertEqual(connected.disconnects.reasons, [])

    def test_kexInitFirst(self) -> None:
        """
        Under strict key exchange the client's KEXINIT must be its first
        packet.
        """
        connected = Connected(self)
        connected.receive(clearPacket(bytes((MSG_IGNORE,)) + NS(b"")), kexInit(LISTS, strict=True))
        self.assertEqual(connected.disconnects.reasons, [DISCONNECT_PROTOCOL_ERROR])

    def test_secondKexInit(self) -> None:
        """
        A second KEXINIT during the first key exchange ends the connection.
        """
        connected = Connected(self)
        connected.receive(kexInit(LISTS, strict=True), kexInit(LISTS))
        self.assertEqual(connected.disconnects.reasons, [DISCONNECT_PROTOCOL_ERROR])

    def test_sequenceNumbersRestart(self) -> None:
        """
        Each direction's sequence number restarts at 0 after the NEWKEYS it
        carries, and the first exchange is then over.
        """
        connected = Connected(self)
        connected.receive(kexInit(LISTS, strict=True))
        transport = connected.transport
        keys = bytes(range(64))
        transport.nextEncryptions.setKeys(keys, keys, keys, keys, keys, keys)
        self.assertEqual(transport.incomingPacketSequence, 1)
        self.assertEqual(transport.outgoingPacketSequence, 1)
        transport.sendPacket(MSG_NEWKEYS, b"")
        self.assertEqual(transport.outgoingPacketSequence, 0)
        transport.dataReceived(clearPacket(bytes((MSG_NEWKEYS,))))
        self.assertEqual(transport.incomingPacketSequence, 0)
        self.assertFalse(transport.initialKex)

    def test_wrongGuessIgnored(self) -> None:
        """
        A client that guessed the key exchange wrong sends a first packet
        Conch drops; under strict key exchange that packet does not count,
        and the real one that follows completes the exchange.
        """
        from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        lists = list(LISTS)
        lists[0] = b"curve25519-sha256," + STRICT_KEX_CLIENT
        guessing = clearPacket(
            b"\x14" + bytes(16) + b"".join(NS(names) for names in lists) + b"\x01" + bytes(4)
        )
        public = (
            X25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        )
        connected = Connected(self)
        connected.receive(
            guessing,
            clearPacket(b"\x1e" + NS(b"a wrong guess")),
            clearPacket(b"\x1e" + NS(public)),
        )
        self.assertEqual(connected.disconnects.reasons, [])
        kinds = [payload[0] for payload in clearPackets(connected.tcp.value())]
        self.assertEqual(kinds[-2:], [31, MSG_NEWKEYS])

    def test_withoutStrictSequenceGoesOn(self) -> None:
        """
        Without strict key exchange the sequence numbers run on.
        """
        connected = Connected(self)
        connected.receive(kexInit(LISTS))
        connected.transport.sendPacket(MSG_NEWKEYS, b"")
        self.assertEqual(connected.transport.outgoingPacketSequence, 2)


class OrderTests(SynchronousTestCase):
    """
    What may and may not happen around NEWKEYS, and after a reason to
    disconnect.
    """

    def test_nothingAfterViolation(self) -> None:
        """
        After a strict-KEX violation nothing more is dispatched or answered,
        however much the same read still holds.
        """
        connected = Connected(self)
        ignore = clearPacket(bytes((MSG_IGNORE,)) + NS(b""))
        request = clearPacket(b"\x05" + NS(b"ssh-userauth"))
        connected.receive(kexInit(LISTS, strict=True), ignore, ignore, request)
        self.assertEqual(connected.disconnects.reasons, [DISCONNECT_PROTOCOL_ERROR])

    def test_otherKexMessage(self) -> None:
        """
        Under strict key exchange, a key exchange message the exchange does
        not expect (here 31, a server's reply) ends the connection rather
        than being answered with UNIMPLEMENTED.
        """
        connected = Connected(self)
        connected.receive(kexInit(LISTS, strict=True), clearPacket(b"\x1f"))
        self.assertEqual(connected.disconnects.reasons, [DISCONNECT_PROTOCOL_ERROR])
        self.assertNotIn(
            MSG_UNIMPLEMENTED, [payload[0] for payload in clearPackets(connected.tcp.value())]
        )

    def test_earlyNewKeys(self) -> None:
        """
        A NEWKEYS before the server has sent its own (so before any key was
        derived) ends the connection, with nothing raised out of the
        protocol and nothing after it read.
        """
        connected = Connected(self)
        connected.receive(
            kexInit(LISTS),
            clearPacket(bytes((MSG_NEWKEYS,))),
            clearPacket(bytes((MSG_IGNORE,)) + NS(b"")),
        )
        self.assertEqual(connected.disconnects.reasons, [DISCONNECT_PROTOCOL_ERROR])
        self.assertTrue(connected.tcp.disconnecting)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_quietBetweenNewKeys(self) -> None:
        """
        Between the server's NEWKEYS and the client's, nothing else goes
        out (a packet under the old keys would reuse a ChaCha20 nonce under
        strict key exchange); what waited goes out under the new keys.
        """
        connected = Connected(self)
        connected.receive(kexInit(LISTS, strict=True))
        transport = connected.transport
        keys = bytes(range(64))
        transport.nextEncryptions.setKeys(keys, keys, keys, keys, keys, keys)
        transport.sendPacket(MSG_NEWKEYS, b"")
        sent = len(connected.tcp.value())
        transport.sendPacket(MSG_IGNORE, NS(b"waits"))
        self.assertEqual(len(connected.tcp.value()), sent)
        transport.dataReceived(clearPacket(bytes((MSG_NEWKEYS,))))
        self.assertGreater(len(connected.tcp.value()), sent)
        self.assertEqual(transport.outgoingPacketSequence, 1)
        self.assertEqual(connected.disconnects.reasons, [])

    def test_factoryListKept(self) -> None:
        """
        The strict-KEX marker is added to the first KEXINIT without losing
        a key exchange list set on the transport itself.
        """
        transport = PacketTransport()
        transport.supportedKeyExchanges = [b"curve25519-sha256"]
        transport.sessionID = None
        sent: list[bytes] = []
        transport.sendPacket = lambda kind, payload: sent.append(payload)  # type: ignore[method-assign]
        transport.sendKexInit()
        self.assertEqual(transport.supportedKeyExchanges, [b"curve25519-sha256"])
        self.assertIn(b"kex-strict-s-v00@openssh.com", sent[0])


class FramingTests(SynchronousTestCase):
    """
    Packets framed by one transport's protection are read back by another's,
    whatever their length; a tampered one disconnects with a MAC error.
    """

    NAMES = [
        (b"aes128-gcm@openssh.com", IMPLICIT_MAC),
        (b"aes256-gcm@openssh.com", IMPLICIT_MAC),
        (b"chacha20-poly1305@openssh.com", IMPLICIT_MAC),
        (b"aes128-ctr", b"hmac-sha2-256-etm@openssh.com"),
        (b"aes256-ctr", b"hmac-sha2-512-etm@openssh.com"),
    ]

    def pair(self, cipher: bytes, mac: bytes) -> tuple[PacketTransport, Connected]:
        """
        @return: a sender whose outgoing keys are the receiver's incoming
            ones.
        """
        iv, key, integrity = bytes(range(64)), bytes(range(64, 128)), bytes(range(1, 65))
        sender, receiver = Connected(self), Connected(self)
        for connected in (sender, receiver):
            ciphers = PacketCiphers(cipher, cipher, mac, mac)
            ciphers.setKeys(iv, key, iv, key, integrity, integrity)
            connected.transport.currentEncryptions = ciphers
            connected.transport.buf = b""
            connected.transport.gotVersion = True
        # Sequence numbers in step, and not 0.
        sender.transport.outgoingPacketSequence = 5
        receiver.transport.incomingPacketSequence = 5
        sender.tcp.clear()
        return sender.transport, receiver

    def test_roundTrip(self) -> None:
        """
        Payloads of every length up to two blocks past a power of two come
        through, in order, and sequence numbers advance on both sides.
        """
        for cipher, mac in self.NAMES:
            sender, receiver = self.pair(cipher, mac)
            received: list[bytes] = []

            def dispatch(number: int, payload: bytes, received: list[bytes] = received) -> None:
                received.append(bytes((number,)) + payload)

            receiver.transport.dispatchMessage = dispatch  # type: ignore[method-assign]
            payloads = [
                bytes((MSG_IGNORE,)) + NS(bytes(range(n % 256)) * (n // 256 + 1))
                for n in range(0, 300, 7)
            ]
            for payload in payloads:
                sender.sendPacket(payload[0], payload[1:])
            wire = sender.transport.value()  # type: ignore[attr-defined]
            receiver.transport.dataReceived(wire[:3])
            receiver.transport.dataReceived(wire[3:])
            self.assertEqual(received, payloads, cipher)
            self.assertEqual(receiver.transport.incomingPacketSequence, 5 + len(payloads))

    def test_channelDataNotCopied(self) -> None:
        """
        Channel data reaches C{dispatchMessage} as a view of the decrypted
        packet, every other message as C{bytes}; both with their content.
        """
        for cipher, mac in self.NAMES:
            sender, receiver = self.pair(cipher, mac)
            received: list[tuple[int, type, bytes]] = []

            def dispatch(
                number: int, payload: bytes, received: list[tuple[int, type, bytes]] = received
            ) -> None:
                received.append((number, type(payload), bytes(payload)))

            receiver.transport.dispatchMessage = dispatch  # type: ignore[method-assign]
            # Past the key exchange, when channel data may go out.
            sender._keyExchangeState = sender._KEY_EXCHANGE_NONE
            data = struct.pack(">L", 0) + NS(b"d" * 40000)
            sender.sendPacket(MSG_CHANNEL_DATA, data)
            sender.sendPacket(MSG_IGNORE, NS(b"i"))
            receiver.transport.dataReceived(sender.transport.value())  # type: ignore[attr-defined]
            self.assertEqual(
                received,
                [(MSG_CHANNEL_DATA, memoryview, data), (MSG_IGNORE, bytes, NS(b"i"))],
                cipher,
            )

    def test_anySplit(self) -> None:
        """
        However the stream is cut into reads (within a length, across a
        tag, one byte at a time, several packets at once), every packet is
        dispatched once, in order, with its content, and nothing is left.
        """
        for cipher, mac in self.NAMES:
            for step in (1, 3, 5, 17, 100, 1000, 4099, 30000):
                sender, receiver = self.pair(cipher, mac)
                received: list[bytes] = []

                def dispatch(number: int, payload: bytes, received: list[bytes] = received) -> None:
                    received.append(bytes((number,)) + bytes(payload))

                receiver.transport.dispatchMessage = dispatch  # type: ignore[method-assign]
                payloads = [
                    bytes((MSG_IGNORE,)) + NS(bytes((n % 256,)) * (n * 97 % 5000))
                    for n in range(40)
                ]
                for payload in payloads:
                    sender.sendPacket(payload[0], payload[1:])
                wire = sender.transport.value()  # type: ignore[attr-defined]
                for start in range(0, len(wire), step):
                    receiver.transport.dataReceived(wire[start : start + step])
                self.assertEqual(received, payloads, (cipher, step))
                self.assertEqual(receiver.transport.buf, b"", (cipher, step))
                self.assertEqual(receiver.transport.incomingPacketSequence, 5 + len(payloads))

    def test_readNotKept(self) -> None:
        """
        After a read, the transport keeps only the partial packet it ended
        with, not the packets already handled: an idle connection holds no
        more than one packet of its last (up to 1 MiB) read.
        """
        for cipher, mac in self.NAMES:
            sender, receiver = self.pair(cipher, mac)
            received: list[bytes] = []

            def dispatch(number: int, payload: bytes, received: list[bytes] = received) -> None:
                received.append(bytes(payload))

            receiver.transport.dispatchMessage = dispatch  # type: ignore[method-assign]
            for n in range(3):
                sender.sendPacket(MSG_IGNORE, NS(bytes([n]) * 20000))
            wire = sender.transport.value()  # type: ignore[attr-defined]
            receiver.transport.dataReceived(wire[:-100])
            self.assertEqual(len(received), 2, cipher)
            partial = wire[len(wire) - len(receiver.transport.buf) - 100 : -100]
            self.assertEqual(receiver.transport.buf, partial, cipher)
            self.assertLess(len(receiver.transport.buf), 20100, cipher)
            receiver.transport.dataReceived(wire[-100:])
            self.assertEqual(received[2], NS(b"\x02" * 20000), cipher)
            self.assertEqual(receiver.transport.buf, b"", cipher)

    def test_tampered(self) -> None:
        """
        A packet changed on the way disconnects with a MAC error, and
        nothing of it is dispatched.
        """
        for cipher, mac in self.NAMES:
            sender, receiver = self.pair(cipher, mac)
            received: list[int] = []

            def dispatch(number: int, payload: bytes, received: list[int] = received) -> None:
                received.append(number)

            receiver.transport.dispatchMessage = dispatch  # type: ignore[method-assign]
            sender.sendPacket(MSG_IGNORE, NS(b"payload"))
            wire = bytearray(sender.transport.value())  # type: ignore[attr-defined]
            wire[-20] ^= 1
            receiver.transport.dataReceived(bytes(wire))
            self.assertEqual((received, receiver.disconnects.reasons), ([], [DISCONNECT_MAC_ERROR]))

    def test_emptyMessage(self) -> None:
        """
        A packet whose padding leaves no message number ends the
        connection, and nothing after it is read.
        """
        from twisted_s3sftp.ssh.ciphers import AESGCMProtection

        sender, receiver = self.pair(b"aes128-gcm@openssh.com", IMPLICIT_MAC)
        received: list[int] = []

        def dispatch(number: int, payload: bytes) -> None:
            received.append(number)

        receiver.transport.dispatchMessage = dispatch  # type: ignore[method-assign]
        key, iv = bytes(range(64, 128))[:16], bytes(range(64))
        packet = struct.pack(">LB", 16, 15) + bytes(15)
        wire = AESGCMProtection(key, iv).seal(5, packet)
        receiver.transport.dataReceived(wire)
        self.assertEqual(
            (received, receiver.disconnects.reasons), ([], [DISCONNECT_PROTOCOL_ERROR])
        )

    def test_badLength(self) -> None:
        """
        A length that is not a whole number of blocks, or over 1 MiB, ends
        the connection before anything more is read.
        """
        for length in (17, 2**21):
            sender, receiver = self.pair(b"aes128-gcm@openssh.com", IMPLICIT_MAC)
            receiver.transport.dataReceived(struct.pack(">L", length) + bytes(64))
            self.assertEqual(receiver.disconnects.reasons, [DISCONNECT_PROTOCOL_ERROR])


class RandomPaddingTests(SynchronousTestCase):
    """
    L{RandomPadding} hands out random bytes from a pool it refills.
    """

    def test_eachByteOnce(self) -> None:
        """
        Consecutive takes are consecutive slices of what the operating
        system gave, never the same bytes twice; a take that the pool
        cannot cover refills it.
        """
        reads: list[int] = []
        padding = RandomPadding(size=16)

        def urandom(count: int) -> bytes:
            reads.append(count)
            return bytes(range(len(reads) * 16, len(reads) * 16 + count))

        self.patch(__import__("os"), "urandom", urandom)
        first, second = padding.take(10), padding.take(6)
        self.assertEqual(first + second, bytes(range(16, 32)))
        third = padding.take(4)
        self.assertEqual(third, bytes(range(32, 36)))
        self.assertEqual(len(reads), 2)
