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
    of the connection, any message other than the key exchange's own
    (IGNORE, DEBUG and UNIMPLEMENTED included) before the client's first
    NEWKEYS ends the connection, and each direction's sequence number
    restarts at 0 after every NEWKEYS it carries, for the whole connection.
  - UNIMPLEMENTED names the sequence number of the packet it answers
    (Conch names the one after it, RFC 4253 section 11.4).

Written from the specifications, not from another implementation.
"""

from __future__ import annotations

import struct

from twisted.conch.ssh.common import ffs, getNS
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
from twisted.python import randbytes

from .ciphers import AEAD_CIPHERS, IMPLICIT_MAC, PacketCiphers

log = Logger()

#: The markers of strict key exchange, in C{kex_algorithms} of the first
#: KEXINIT only.
STRICT_KEX_CLIENT = b"kex-strict-c-v00@openssh.com"
STRICT_KEX_SERVER = b"kex-strict-s-v00@openssh.com"

#: The largest packet accepted (its C{packet_length}), as Conch's own.
MAX_PACKET = 1024 * 1024

#: Sequence numbers wrap at 2**32 (RFC 4253 section 6.4).
_SEQUENCE_MASK = 0xFFFFFFFF


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

    def sendKexInit(self) -> None:
        if self.sessionID is None:
            # The marker goes in the first KEXINIT only; Conch appends its
            # own ext-info-s marker after the list.
            self.supportedKeyExchanges = [*type(self).supportedKeyExchanges, STRICT_KEX_SERVER]
            try:
                super().sendKexInit()
            finally:
                del self.supportedKeyExchanges
        else:
            super().sendKexInit()

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
            self.sendDisconnect(DISCONNECT_KEY_EXCHANGE_FAILED, b"couldn't match all kex parts")
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
        super().ssh_NEWKEYS(packet)
        self.initialKex = False
        if self.strictKex:
            self.incomingPacketSequence = 0

    def dispatchMessage(self, messageNum: int, payload: bytes) -> None:
        if self.strictKex and self.initialKex:
            progressing = self._keyExchangeState == self._KEY_EXCHANGE_PROGRESSING
            if messageNum == MSG_KEXINIT and progressing:
                self._strictViolation(b"a second KEXINIT during the first key exchange")
                return
            if messageNum != MSG_DISCONNECT and not _keyExchangeMessage(messageNum):
                self._strictViolation(b"unexpected message %d" % (messageNum,))
                return
        super().dispatchMessage(messageNum, payload)

    def _strictViolation(self, what: bytes) -> None:
        log.warn(
            "Disconnecting {peer}: strict key exchange violation: {what}",
            peer=getattr(self, "peerHost", None),
            what=what.decode("ascii"),
        )
        self.sendDisconnect(DISCONNECT_PROTOCOL_ERROR, b"strict KEX violation: " + what)

    def sendUnimplemented(self) -> None:
        # getPacket has already counted the packet this answers.
        sequence = (self.incomingPacketSequence - 1) & _SEQUENCE_MASK
        self.sendPacket(MSG_UNIMPLEMENTED, struct.pack("!L", sequence))

    def sendPacket(self, messageType: int, payload: bytes) -> None:
        # Before the first NEWKEYS, Conch's own SSHCiphers (no cipher).
        protection = getattr(self.currentEncryptions, "outProtection", None)
        if protection is None:
            super().sendPacket(messageType, payload)
        elif self._keyExchangeState != self._KEY_EXCHANGE_NONE and (
            not self._allowedKeyExchangeMessageType(messageType)
        ):
            self._blockedByKeyExchange.append((messageType, payload))
            return
        else:
            # No compression: the policy offers none.
            body = bytes((messageType,)) + payload
            size = protection.blockSize
            padding = size - (1 + len(body)) % size
            if padding < 4:
                padding += size
            packet = (
                struct.pack("!LB", 1 + len(body) + padding, padding)
                + body
                + randbytes.secureRandom(padding)
            )
            sequence = self.outgoingPacketSequence & _SEQUENCE_MASK
            self.transport.write(protection.seal(sequence, packet))
            self.outgoingPacketSequence += 1
        if messageType == MSG_NEWKEYS and self.strictKex:
            self.outgoingPacketSequence = 0

    def getPacket(self) -> bytes | None:
        protection = getattr(self.currentEncryptions, "inProtection", None)
        if protection is None:
            return super().getPacket()
        if len(self.buf) < 4:
            return None
        sequence = self.incomingPacketSequence & _SEQUENCE_MASK
        length = protection.packetLength(sequence, self.buf[:4])
        if length > MAX_PACKET or length < 8 or length % protection.blockSize:
            self.sendDisconnect(DISCONNECT_PROTOCOL_ERROR, b"bad packet length %d" % (length,))
            return None
        end = 4 + length + protection.tagSize
        if len(self.buf) < end:
            return None
        wire, self.buf = self.buf[:end], self.buf[end:]
        packet = protection.open(sequence, wire)
        if packet is None:
            self.sendDisconnect(DISCONNECT_MAC_ERROR, b"bad MAC")
            return None
        padding = packet[4]
        if padding < 4 or padding > length - 1:
            self.sendDisconnect(DISCONNECT_PROTOCOL_ERROR, b"bad padding length")
            return None
        self.incomingPacketSequence += 1
        return packet[5 : 4 + length - padding]
