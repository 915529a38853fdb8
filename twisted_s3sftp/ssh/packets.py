"""
The SSH binary packet protocol with what Conch leaves out: AEAD ciphers and
encrypt-then-MAC framing (L{twisted_s3sftp.ssh.ciphers}), and strict key
exchange (OpenSSH's C{PROTOCOL}, section 1.10; the fix for Terrapin,
CVE-2023-48795).

L{PacketTransport} is Conch's server transport with:

  - Negotiation in which a direction whose cipher is AEAD needs no MAC in
    common (Conch refuses the connection when no MAC matches, even for
    AES-GCM), building L{PacketCiphers}.
  - Framing for the new protections: the packet length outside the
    padding's alignment, sent in clear (or, for ChaCha20-Poly1305,
    encrypted on its own), and the tag checked before any plaintext is
    used.  Directions that negotiated AES-CTR with C{hmac-sha2-*} keep
    Conch's own code.
  - Strict key exchange: C{kex-strict-s-v00@openssh.com} is offered in the
    first KEXINIT.  When the client's first KEXINIT carries
    C{kex-strict-c-v00@openssh.com}, that KEXINIT must be the first packet
    of the connection; until the client's first NEWKEYS, only the key
    exchange's own messages, each once and in order, are accepted, and
    anything else (IGNORE, DEBUG and UNIMPLEMENTED included) ends the
    connection; each direction's sequence number restarts at 0 after every
    NEWKEYS it carries, for the whole connection.
  - Between the server's NEWKEYS and the client's, nothing else is sent:
    Conch keeps the old keys until the client's NEWKEYS, and under strict
    key exchange a packet sent then would reuse a ChaCha20 nonce of the old
    keys.  Such packets wait, as during the key exchange, and go out under
    the new keys.
  - A NEWKEYS before the server's own, a direction that carried
    L{MAX_PACKETS_PER_KEY} packets without a rekey, an empty message, and
    any packet after a reason to disconnect end the connection; nothing
    after it is read.
  - UNIMPLEMENTED names the sequence number of the packet it answers
    (Conch names the one after it, RFC 4253 section 11.4).
  - Received packets are taken from the buffer by position, not by copying
    the rest of it for each packet (as Conch's own code does); after each
    read, only a partial packet is kept.
  - The random padding of packets sent under these protections comes from
    L{RandomPadding}: the operating system's CSPRNG read 64 KiB at a time,
    each byte used once, rather than a system call per packet.

Written from the specifications, not from another implementation.
"""

from __future__ import annotations

import os
import struct

from twisted.conch.ssh import _kex
from twisted.conch.ssh.common import ffs, getNS
from twisted.conch.ssh.connection import MSG_CHANNEL_DATA
from twisted.conch.ssh.transport import (
    DISCONNECT_KEY_EXCHANGE_FAILED,
    DISCONNECT_MAC_ERROR,
    DISCONNECT_PROTOCOL_ERROR,
    MSG_DISCONNECT,
    MSG_KEXINIT,
    MSG_NEWKEYS,
    MSG_UNIMPLEMENTED,
    SSHServerTransport,
)
from twisted.internet.interfaces import ITransport
from twisted.logger import Logger

from .ciphers import AEAD_CIPHERS, IMPLICIT_MAC, IPacketProtection, PacketCiphers

log = Logger()

#: The markers of strict key exchange, in C{kex_algorithms} of the first
#: KEXINIT only.
STRICT_KEX_CLIENT = b"kex-strict-c-v00@openssh.com"
STRICT_KEX_SERVER = b"kex-strict-s-v00@openssh.com"

#: The largest packet accepted (its C{packet_length}), as Conch's own.
MAX_PACKET = 1024 * 1024

#: Sequence numbers wrap at 2**32 (RFC 4253 section 6.4).
_SEQUENCE_MASK = 0xFFFFFFFF

#: The most packets one direction may carry under one set of keys: past
#: 2**32, ChaCha20-Poly1305 would reuse a nonce.  Clients rekey long before
#: (OpenSSH at 2**31 packets at most); one that does not is disconnected.
MAX_PACKETS_PER_KEY = 2**31

#: The messages a client sends in each kind of key exchange, in order:
#: one for ECDH, X25519, ML-KEM and fixed groups (KEXDH_INIT); two for
#: group exchange (a request, old or new, then GEX_INIT).
MSG_KEXDH_INIT = 30
MSG_KEX_DH_GEX_REQUEST = 34
MSG_KEX_DH_GEX_INIT = 32


class RandomPadding:
    """
    Random bytes for packet padding (RFC 4253, section 6), from
    C{os.urandom} read L{size} bytes at a time; every byte is handed out
    once.  One system call per packet was 2 % of a download's samples.

    @ivar size: the bytes read from the operating system at a time.
    """

    def __init__(self, size: int = 64 * 1024) -> None:
        self.size = size
        self._pool = b""
        self._at = 0

    def take(self, count: int) -> bytes:
        """
        @return: C{count} random bytes (at most L{size}).
        """
        at = self._at
        if at + count > len(self._pool):
            self._pool = os.urandom(self.size)
            at = 0
        self._at = at + count
        return self._pool[at : at + count]


#: The padding of every connection's packets (the reactor thread's only).
_padding = RandomPadding()


def _keyExchangeMessage(messageNum: int) -> bool:
    """
    @return: whether the message belongs to a key exchange (RFC 4253
        section 7: KEXINIT, NEWKEYS, and the method-specific 30 to 49).
    """
    return messageNum in (MSG_KEXINIT, MSG_NEWKEYS) or 30 <= messageNum <= 49


class PacketTransport(SSHServerTransport):
    """
    Conch's server transport with AEAD ciphers, encrypt-then-MAC and strict
    key exchange.

    @ivar strictKex: whether the client asked for strict key exchange.
    @ivar initialKex: whether the first key exchange is still under way
        (until the client's first NEWKEYS).
    """

    transport: ITransport

    strictKex = False
    initialKex = True
    _kexInitSeen = False
    _kexMessages: list[int] = []
    _newKeysSent = False
    _closing = False
    _bufStart = 0
    _sentUnderKeys = 0
    _receivedUnderKeys = 0

    def sendKexInit(self) -> None:
        if self.sessionID is not None:
            super().sendKexInit()
            return
        # The marker goes in the first KEXINIT only; Conch appends its own
        # ext-info-s marker after the list.  The list may be the factory's
        # own, set on this instance: it is put back as it was.
        own = "supportedKeyExchanges" in self.__dict__
        offered = self.supportedKeyExchanges
        self.supportedKeyExchanges = [*offered, STRICT_KEX_SERVER]
        try:
            super().sendKexInit()
        finally:
            if own:
                self.supportedKeyExchanges = offered
            else:
                del self.supportedKeyExchanges

    def ssh_KEXINIT(self, packet: bytes) -> None:
        """
        Negotiate (RFC 4253 section 7.1), with no MAC needed in a direction
        whose cipher is AEAD, and note strict key exchange.

        What Conch's own C{ssh_KEXINIT} does with the outcome is done here
        too: the exchange state, the other side's KEXINIT for the exchange
        hash, extension negotiation and a wrong first-packet guess.
        """
        first = not self._kexInitSeen
        self._kexInitSeen = True
        self._kexMessages = []
        self.otherKexInitPayload = bytes((MSG_KEXINIT,)) + packet
        fields = getNS(packet[16:], 10)
        strings, rest = fields[:-1], fields[-1]
        (
            kexAlgs,
            keyAlgs,
            encCS,
            encSC,
            macCS,
            macSC,
            compCS,
            compSC,
            _langCS,
            _langSC,
        ) = (s.split(b",") for s in strings)
        if first:
            self.strictKex = STRICT_KEX_CLIENT in kexAlgs
            # getPacket has counted this packet already.
            if self.strictKex and self.incomingPacketSequence != 1:
                self._strictViolation(b"KEXINIT was not the first packet")
                return
        self.kexAlg = ffs(kexAlgs, self.supportedKeyExchanges)
        self.keyAlg = ffs(keyAlgs, self.supportedPublicKeys)
        inCipher = ffs(encCS, self.supportedCiphers)
        outCipher = ffs(encSC, self.supportedCiphers)
        inMAC = IMPLICIT_MAC if inCipher in AEAD_CIPHERS else ffs(macCS, self.supportedMACs)
        outMAC = IMPLICIT_MAC if outCipher in AEAD_CIPHERS else ffs(macSC, self.supportedMACs)
        self.outgoingCompressionType = ffs(compSC, self.supportedCompressions)
        self.incomingCompressionType = ffs(compCS, self.supportedCompressions)
        if None in (
            self.kexAlg,
            self.keyAlg,
            inCipher,
            outCipher,
            inMAC,
            outMAC,
            self.outgoingCompressionType,
            self.incomingCompressionType,
        ) or self.kexAlg in (self._EXT_INFO_C, self._EXT_INFO_S):
            # An extension marker must never be negotiated as a key
            # exchange (RFC 8308, section 2.2).
            self._fail(DISCONNECT_KEY_EXCHANGE_FAILED, b"couldn't match all kex parts")
            return
        self.nextEncryptions = PacketCiphers(outCipher, inCipher, outMAC, inMAC)
        self._peerSupportsExtensions = self._EXT_INFO_C in kexAlgs
        if self._keyExchangeState == self._KEY_EXCHANGE_REQUESTED:
            self._keyExchangeState = self._KEY_EXCHANGE_PROGRESSING
        else:
            self.sendKexInit()
        if rest[:1] not in (b"", b"\x00") and (
            kexAlgs[0] != self.supportedKeyExchanges[0] or keyAlgs[0] != self.supportedPublicKeys[0]
        ):
            # A first key exchange packet follows and guessed wrong: it
            # must be ignored.
            self.ignoreNextPacket = True

    def ssh_NEWKEYS(self, packet: bytes) -> None:
        if not self._newKeysSent:
            self._fail(DISCONNECT_PROTOCOL_ERROR, b"NEWKEYS before the key exchange")
            return
        if packet:
            self._fail(DISCONNECT_PROTOCOL_ERROR, b"NEWKEYS takes no data")
            return
        # From here on, packets go out under the new keys: Conch switches
        # both directions now and sends what waited.
        self._newKeysSent = False
        self._receivedUnderKeys = 0
        self.initialKex = False
        if self.strictKex:
            self.incomingPacketSequence = 0
        super().ssh_NEWKEYS(packet)

    def dispatchMessage(self, messageNum: int, payload: bytes | memoryview) -> None:
        if self._closing:
            return
        if self.strictKex and self.initialKex:
            problem = self._outOfSequence(messageNum)
            if problem is not None:
                self._strictViolation(problem)
                return
        super().dispatchMessage(messageNum, payload)

    def _outOfSequence(self, messageNum: int) -> bytes | None:
        """
        @return: why C{messageNum} may not come now, during a strict first
            key exchange, or L{None} if it may.
        """
        if messageNum in (MSG_DISCONNECT, MSG_NEWKEYS):
            # NEWKEYS is checked by ssh_NEWKEYS.
            return None
        if messageNum == MSG_KEXINIT:
            return b"a second KEXINIT during the first key exchange"
        seen = self._kexMessages
        if self.kexAlg is not None and _kex.isDynamicPrimesGroup(self.kexAlg):
            expected = (
                (MSG_KEX_DH_GEX_REQUEST, MSG_KEXDH_INIT) if not seen else (MSG_KEX_DH_GEX_INIT,)
            )
            done = len(seen) >= 2
        else:
            expected, done = (MSG_KEXDH_INIT,), bool(seen)
        if done or messageNum not in expected:
            return b"unexpected message %d" % (messageNum,)
        if not self.ignoreNextPacket:
            # A wrongly guessed first packet, which Conch drops, does not
            # count: the client sends its real one next.
            self._kexMessages = [*seen, messageNum]
        return None

    def _strictViolation(self, what: bytes) -> None:
        log.warn(
            "Disconnecting {peer}: strict key exchange violation: {what}",
            peer=getattr(self, "peerHost", None),
            what=what.decode("ascii"),
        )
        self._fail(DISCONNECT_PROTOCOL_ERROR, b"strict KEX violation: " + what)

    def _fail(self, reason: int, description: bytes) -> None:
        """
        End the connection: nothing more is read, or dispatched.
        """
        self._closing = True
        self.buf = b""
        self._bufStart = 0
        self.sendDisconnect(reason, description)

    def sendUnimplemented(self) -> None:
        # getPacket has already counted the packet this answers.
        sequence = (self.incomingPacketSequence - 1) & _SEQUENCE_MASK
        self.sendPacket(MSG_UNIMPLEMENTED, struct.pack("!L", sequence))

    def sendPacket(self, messageType: int, payload: bytes) -> None:
        # During a key exchange only its own messages go out (Conch's rule),
        # and between our NEWKEYS and the client's nothing does: the old
        # keys are done with, and the new ones not yet in use.  The rest
        # waits, and Conch sends it once the exchange is over.
        if self._keyExchangeState != self._KEY_EXCHANGE_NONE and (
            self._newKeysSent or not self._allowedKeyExchangeMessageType(messageType)
        ):
            self._blockedByKeyExchange.append((messageType, payload))
            return
        protection = getattr(self.currentEncryptions, "outProtection", None)
        if protection is None:
            super().sendPacket(messageType, payload)
        else:
            # No compression: the policy offers none.
            body = bytes((messageType,)) + payload
            size = protection.blockSize
            padding = size - (1 + len(body)) % size
            if padding < 4:
                padding += size
            packet = (
                struct.pack("!LB", 1 + len(body) + padding, padding) + body + _padding.take(padding)
            )
            sequence = self.outgoingPacketSequence & _SEQUENCE_MASK
            self.transport.write(protection.seal(sequence, packet))
            self.outgoingPacketSequence += 1
        self._sentUnderKeys += 1
        if messageType == MSG_NEWKEYS:
            self._newKeysSent = True
            self._sentUnderKeys = 0
            if self.strictKex:
                self.outgoingPacketSequence = 0
        elif self._sentUnderKeys >= MAX_PACKETS_PER_KEY and not self._closing:
            self._fail(DISCONNECT_PROTOCOL_ERROR, b"too many packets without a rekey")

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return
        # (Left by a read that ended in an error.)
        self._compactBuffer()
        if not self.gotVersion:
            super().dataReceived(data)
            return
        # Conch's loop, without its copies of each payload: channel data
        # goes to the channel as a view of the decrypted packet.
        self.buf = self.buf + data
        packet = self._nextPacket()
        while packet:
            messageNum = packet[0]
            payload = packet[1:]
            if messageNum != MSG_CHANNEL_DATA:
                payload = bytes(payload)
            self.dispatchMessage(messageNum, payload)
            packet = self._nextPacket()
        # What the packets left, once per read rather than per packet: an
        # idle connection keeps no more than its partial packet, not the
        # whole of its last read.
        self._compactBuffer()

    def _compactBuffer(self) -> None:
        """
        Drop the packets already taken from the buffer by position.
        """
        if self._bufStart:
            self.buf = self.buf[self._bufStart :]
            self._bufStart = 0

    def getPacket(self) -> bytes | None:
        packet = self._nextPacket()
        return None if packet is None else bytes(packet)

    def _nextPacket(self) -> bytes | memoryview | None:
        """
        Take the next packet from the buffer.

        @return: its payload (a view of the decrypted packet under an
            AEAD or EtM protection), or L{None} if none has all arrived.
        """
        if self._closing:
            return None
        protection = getattr(self.currentEncryptions, "inProtection", None)
        if protection is None:
            # Conch's own code reads from the start of the buffer.
            self._compactBuffer()
            packet = super().getPacket()
        else:
            packet = self._getProtected(protection)
        if packet is not None:
            self._receivedUnderKeys += 1
            if self._receivedUnderKeys >= MAX_PACKETS_PER_KEY:
                self._fail(DISCONNECT_PROTOCOL_ERROR, b"too many packets without a rekey")
                return None
        return packet

    def _getProtected(self, protection: IPacketProtection) -> memoryview | None:
        """
        Take one packet protected by C{protection} from the buffer.

        @return: its payload, or L{None} if it has not all arrived or the
            connection is ending.
        """
        start = self._bufStart
        buf = self.buf
        if len(buf) - start < 4:
            return None
        sequence = self.incomingPacketSequence & _SEQUENCE_MASK
        length = protection.packetLength(sequence, buf[start : start + 4])
        if length > MAX_PACKET or length < 8 or length % protection.blockSize:
            self._fail(DISCONNECT_PROTOCOL_ERROR, b"bad packet length %d" % (length,))
            return None
        end = start + 4 + length + protection.tagSize
        if len(buf) < end:
            return None
        body = protection.open(sequence, memoryview(buf)[start:end])
        self._bufStart = end
        if body is None:
            self._fail(DISCONNECT_MAC_ERROR, b"bad MAC")
            return None
        padding = body[0]
        # At least 4 bytes of padding, and a message number before it.
        if padding < 4 or padding > length - 2:
            self._fail(DISCONNECT_PROTOCOL_ERROR, b"bad padding length")
            return None
        self.incomingPacketSequence += 1
        return memoryview(body)[1 : length - padding]
