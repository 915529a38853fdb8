"""
Packet protection that Twisted Conch lacks, written from the specifications:

  - C{aes128-gcm@openssh.com} and C{aes256-gcm@openssh.com}: AES-GCM as
    RFC 5647 defines it and OpenSSH's C{PROTOCOL} (section 1.6) profiles
    it.  The packet length is sent in clear and authenticated as the
    additional data; the 12-byte nonce is the IV derived at key exchange, a
    4-byte fixed field and an 8-byte invocation counter incremented after
    every packet.  No MAC is negotiated.
  - C{chacha20-poly1305@openssh.com} (OpenSSH's
    C{PROTOCOL.chacha20poly1305}): the 64-byte key is a main key K_2 (its
    first half) and a header key K_1 (its second half); the length is
    encrypted with ChaCha20 under K_1, the rest under K_2 from block 1, both
    with the sequence number as the nonce; the Poly1305 key is block 0 of
    the K_2 stream, and the tag covers the encrypted length and body.  No
    MAC is negotiated.
  - C{hmac-sha2-256-etm@openssh.com} and C{hmac-sha2-512-etm@openssh.com}
    (OpenSSH's C{PROTOCOL}, section 1.5): encrypt-then-MAC, the length in
    clear, the MAC over the sequence number, the length and the ciphertext,
    checked before anything is decrypted.

Each direction of a connection gets one L{PacketProtection}.  Conch's own
encrypt-and-MAC (AES-CTR with C{hmac-sha2-*}) stays with Conch:
L{PacketCiphers} builds a protection only where one of the names above was
negotiated, and leaves C{SSHCiphers} as it is for the rest, but for its
MACs: each is computed from a copy of an HMAC keyed once per key exchange,
fed the sequence number and the packet, where Conch keys a new HMAC for
every packet and copies the packet behind the sequence number first.

Every protection seals a whole plaintext packet (C{uint32 packet_length ||
byte padding_length || payload || padding}) into what goes on the wire, and
opens what came off the wire into the plaintext after the length; the
caller frames it (L{twisted_s3sftp.ssh.packets}).
"""

from __future__ import annotations

import hmac
import struct
from collections.abc import Callable
from hashlib import sha256, sha512
from typing import Any

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.poly1305 import Poly1305
from twisted.conch.ssh.transport import SSHCiphers
from zope.interface import Attribute, Interface, implementer

#: The MAC name recorded for a direction whose cipher authenticates itself
#: (OpenSSH's logs say C{<implicit>}).
IMPLICIT_MAC = b"<implicit>"

#: AEAD ciphers: name -> key length in bytes.
AEAD_CIPHERS = {
    b"aes128-gcm@openssh.com": 16,
    b"aes256-gcm@openssh.com": 32,
    b"chacha20-poly1305@openssh.com": 64,
}

#: Encrypt-then-MAC algorithms: name -> hash.
ETM_MACS: dict[bytes, Callable[..., Any]] = {
    b"hmac-sha2-256-etm@openssh.com": sha256,
    b"hmac-sha2-512-etm@openssh.com": sha512,
}

_UINT32 = struct.Struct(">L")


class IPacketProtection(Interface):
    """
    The protection of one direction of an SSH connection.
    """

    blockSize = Attribute(
        "The alignment of C{padding_length || payload || padding}: the packet"
        " length is not part of it."
    )
    tagSize = Attribute("The bytes after the packet: the tag or the MAC.")

    def seal(sequence: int, packet: bytes) -> bytes:
        """
        @param sequence: the packet's sequence number (modulo 2**32).
        @param packet: the plaintext packet, its length field first.
        @return: the bytes to send.
        """

    def packetLength(sequence: int, head: bytes) -> int:
        """
        @param sequence: the sequence number of the packet arriving.
        @param head: its first 4 bytes as received.
        @return: its C{packet_length}, not yet authenticated.
        """

    def open(sequence: int, wire: bytes | memoryview) -> bytes | None:
        """
        @param sequence: the packet's sequence number.
        @param wire: the whole packet as received, tag included.
        @return: the plaintext after the length field (C{padding_length ||
            payload || padding}), or L{None} if the packet fails
            authentication (nothing of it is then decrypted).
        """


@implementer(IPacketProtection)
class AESGCMProtection:
    """
    C{aes128-gcm@openssh.com} or C{aes256-gcm@openssh.com}, one direction.
    """

    blockSize = 16
    tagSize = 16

    def __init__(self, key: bytes, iv: bytes) -> None:
        """
        @param key: the encryption key (16 or 32 bytes).
        @param iv: the initial IV from key exchange (at least 12 bytes).
        """
        self._aead = AESGCM(key)
        self._fixed = iv[:4]
        self._counter = int.from_bytes(iv[4:12], "big")

    def _nonce(self) -> bytes:
        nonce = self._fixed + self._counter.to_bytes(8, "big")
        self._counter = (self._counter + 1) & 0xFFFFFFFFFFFFFFFF
        return nonce

    def seal(self, sequence: int, packet: bytes) -> bytes:
        head = packet[:4]
        return head + self._aead.encrypt(self._nonce(), packet[4:], head)

    def packetLength(self, sequence: int, head: bytes) -> int:
        (length,) = _UINT32.unpack(head)
        return int(length)

    def open(self, sequence: int, wire: bytes | memoryview) -> bytes | None:
        try:
            return self._aead.decrypt(self._nonce(), wire[4:], wire[:4])
        except InvalidTag:
            return None


def _chachaNonce(sequence: int) -> bytes:
    """
    The 16-byte nonce of C{cryptography}'s ChaCha20 for block 0 of a packet:
    a 64-bit little-endian block counter (0), then the sequence number as a
    64-bit big-endian integer, as OpenSSH lays out the original ChaCha20's
    counter and nonce.
    """
    return bytes(8) + sequence.to_bytes(8, "big")


@implementer(IPacketProtection)
class ChaCha20Poly1305Protection:
    """
    C{chacha20-poly1305@openssh.com}, one direction.
    """

    blockSize = 8
    tagSize = 16

    def __init__(self, key: bytes) -> None:
        """
        @param key: the 64 bytes of encryption key from key exchange.
        """
        self._main = key[:32]
        self._header = key[32:64]

    def _stream(self, sequence: int) -> Any:
        # One keystream per packet: its block 0 gives the Poly1305 key, and
        # the body is encrypted from block 1 on by continuing it.
        stream = Cipher(algorithms.ChaCha20(self._main, _chachaNonce(sequence)), None)
        return stream.encryptor()

    def _length(self, sequence: int, head: bytes | memoryview) -> bytes:
        cipher = Cipher(algorithms.ChaCha20(self._header, _chachaNonce(sequence)), None)
        return cipher.encryptor().update(head)

    def seal(self, sequence: int, packet: bytes) -> bytes:
        stream = self._stream(sequence)
        polyKey = stream.update(bytes(64))[:32]
        sealed = self._length(sequence, packet[:4]) + stream.update(packet[4:])
        return sealed + Poly1305.generate_tag(polyKey, sealed)

    def packetLength(self, sequence: int, head: bytes) -> int:
        (length,) = _UINT32.unpack(self._length(sequence, head))
        return int(length)

    def open(self, sequence: int, wire: bytes | memoryview) -> bytes | None:
        stream = self._stream(sequence)
        polyKey = stream.update(bytes(64))[:32]
        sealed, tag = wire[:-16], wire[-16:]
        try:
            Poly1305.verify_tag(polyKey, sealed, bytes(tag))
        except InvalidSignature:
            return None
        return stream.update(sealed[4:])


@implementer(IPacketProtection)
class EncryptThenMAC:
    """
    A Conch cipher (AES-CTR) with an C{-etm@openssh.com} MAC, one direction.
    """

    def __init__(
        self, crypt: Callable[[bytes | memoryview], bytes], blockSize: int, mac: bytes, key: bytes
    ) -> None:
        """
        @param crypt: the direction's running encryptor or decryptor.
        @param blockSize: the cipher's block size in bytes.
        @param mac: the MAC's name, a key of L{ETM_MACS}.
        @param key: the integrity key from key exchange.
        """
        digest = ETM_MACS[mac]
        self._crypt = crypt
        self.blockSize = blockSize
        self.tagSize = digest().digest_size
        self._key = key[: self.tagSize]
        self._digest = digest

    def _mac(self, sequence: int, data: bytes | memoryview) -> bytes:
        return hmac.digest(self._key, _UINT32.pack(sequence) + data, self._digest)

    def seal(self, sequence: int, packet: bytes) -> bytes:
        sealed = packet[:4] + self._crypt(packet[4:])
        return sealed + self._mac(sequence, sealed)

    def packetLength(self, sequence: int, head: bytes) -> int:
        (length,) = _UINT32.unpack(head)
        return int(length)

    def open(self, sequence: int, wire: bytes | memoryview) -> bytes | None:
        sealed, mac = wire[: -self.tagSize], wire[-self.tagSize :]
        if not hmac.compare_digest(mac, self._mac(sequence, sealed)):
            return None
        return self._crypt(sealed[4:])


class PacketCiphers(SSHCiphers):
    """
    Conch's C{SSHCiphers}, with a L{IPacketProtection} for each direction
    that negotiated an AEAD cipher or an encrypt-then-MAC MAC.

    @ivar outProtection: the outgoing direction's protection, or L{None}
        where Conch's encrypt-and-MAC applies.
    @ivar inProtection: the same for the incoming direction.
    """

    outProtection: IPacketProtection | None = None
    inProtection: IPacketProtection | None = None
    _outHMAC: Any = None
    _inHMAC: Any = None

    def setKeys(
        self,
        outIV: bytes,
        outKey: bytes,
        inIV: bytes,
        inKey: bytes,
        outInteg: bytes,
        inInteg: bytes,
    ) -> None:
        out = self._protection(self.outCipType, self.outMACType, outIV, outKey, outInteg, True)
        into = self._protection(self.inCipType, self.inMACType, inIV, inKey, inInteg, False)
        if out is None:
            o = self._getCipher(self.outCipType, outIV, outKey)
            self.encryptor = o.encryptor()
            self.encBlockSize = o.algorithm.block_size // 8
            # As Conch's own setKeys does; its annotation is narrower.
            self.outMAC = self._getMAC(self.outMACType, outInteg)  # type: ignore[assignment]
            self._outHMAC = _keyedMAC(self.outMAC)
        else:
            self.outProtection = out
            self.encBlockSize = out.blockSize
        if into is None:
            o = self._getCipher(self.inCipType, inIV, inKey)
            self.decryptor = o.decryptor()
            self.decBlockSize = o.algorithm.block_size // 8
            self.inMAC = self._getMAC(self.inMACType, inInteg)  # type: ignore[assignment]
            self._inHMAC = _keyedMAC(self.inMAC)
            if self.inMAC:
                self.verifyDigestSize = self.inMAC[3]
        else:
            self.inProtection = into
            self.decBlockSize = into.blockSize

    def makeMAC(self, seqid: int, data: bytes) -> bytes:
        keyed = self._outHMAC
        if keyed is None:
            return bytes(super().makeMAC(seqid, data))
        mac = keyed.copy()
        mac.update(_UINT32.pack(seqid))
        mac.update(data)
        return bytes(mac.digest())

    def verify(self, seqid: int, data: bytes, mac: bytes) -> bool:
        keyed = self._inHMAC
        if keyed is None:
            return bool(super().verify(seqid, data, mac))
        expected = keyed.copy()
        expected.update(_UINT32.pack(seqid))
        expected.update(data)
        return hmac.compare_digest(mac, expected.digest())

    def _protection(
        self, cipher: bytes, mac: bytes, iv: bytes, key: bytes, integrity: bytes, outgoing: bool
    ) -> IPacketProtection | None:
        """
        @return: the protection for one direction, or L{None} if Conch's
            encrypt-and-MAC applies to it.
        """
        if cipher in AEAD_CIPHERS:
            key = key[: AEAD_CIPHERS[cipher]]
            if cipher == b"chacha20-poly1305@openssh.com":
                return ChaCha20Poly1305Protection(key)
            return AESGCMProtection(key, iv)
        if mac in ETM_MACS:
            context = self._getCipher(cipher, iv, key)
            crypt = context.encryptor() if outgoing else context.decryptor()
            return EncryptThenMAC(crypt.update, context.algorithm.block_size // 8, mac, integrity)
        return None


def _keyedMAC(params: Any) -> Any:
    """
    @param params: Conch's MAC parameters for one direction (from
        C{SSHCiphers._getMAC}).
    @return: an HMAC keyed with their key, to be copied for each packet,
        or L{None} for no MAC.
    """
    if not params or not params[0]:
        return None
    return hmac.new(params.key, digestmod=params[0])
