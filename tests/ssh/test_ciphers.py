"""
Tests for L{twisted_s3sftp.ssh.ciphers}: each construction against
known answers, and tampered packets refused.

The known answers were made with AsyncSSH 2.24's own implementations
(C{asyncssh.encryption.get_encryption}), an implementation independent of
this one: the same key, IV, sequence numbers and packets must give the
same bytes on the wire.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from twisted_s3sftp.ssh.ciphers import (
    IMPLICIT_MAC,
    AESGCMProtection,
    ChaCha20Poly1305Protection,
    EncryptThenMAC,
    IPacketProtection,
    PacketCiphers,
)

#: AEAD ciphers: name -> (key, IV, [(sequence number, plaintext packet,
#: wire bytes)]), in hex; the packets are sent in this order.
AEAD_VECTORS = {
    "aes128-gcm@openssh.com": (
        "0102030405060708090a0b0c0d0e0f10",
        "a0a1a2a3a4a5a6a7a8a9aaab",
        [
            (
                3,
                "000000200e050000000c7373682d7573657261757468404142434445464748494a4b4c4d",
                "000000200c0697a666a172e55f56bb1a9657b6f1ca12a7003df467abee979e08fcf295a95f311f51b4e1632ff97e933f98d04f8f",
            ),
            (
                4,
                "00000030065e000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f2021222324252627404142434445",
                "00000030517d67b729fa4b65e7c5de733978468e49a03bb5d970a4ac27ca576c0a59336f97eff42fd2bc3b1738188bdb0bf99d4d03437593a48a8e30fb5089bb6ddd9594",
            ),
        ],
    ),
    "aes256-gcm@openssh.com": (
        "0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20",
        "a0a1a2a3a4a5a6a7a8a9aaab",
        [
            (
                3,
                "000000200e050000000c7373682d7573657261757468404142434445464748494a4b4c4d",
                "00000020b7d43d66fdb929771723d71894f741f123bff0581a2b24c1611c9db418059478d6b7b9c2bc0d98011664dc91948d8d7f",
            ),
            (
                4,
                "00000030065e000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f2021222324252627404142434445",
                "000000300280082dcf80aacdd83126f0f085cab5b5cd7afb5059ea355eaa12d88dcafd5d893b603aa12ea2085133a93fde4b53bcb5eefbcb6aae922ecff13a2417950107",
            ),
        ],
    ),
    "chacha20-poly1305@openssh.com": (
        "0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f40",
        "",
        [
            (
                3,
                "0000001806050000000c7373682d7573657261757468404142434445",
                "ad53cae16f6ad13c51caad3833583dd66f3730b86ad967b67745c8afa14350bb33c585dc93cb852abfa30dfa",
            ),
            (
                4,
                "00000030065e000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f2021222324252627404142434445",
                "5161750d4eb7f12fdae6b54e39ea12e13069805ac70b15ad293285fe5bf89cc5798a7e346e9dc28f19fe440771b2b5e436c710690e1128b028d3a692cd9d48805c57c961",
            ),
        ],
    ),
}

#: (AES-CTR cipher, EtM MAC) -> (key, IV, MAC key, [(sequence number,
#: plaintext packet, wire bytes)]), in hex.
ETM_VECTORS = {
    ("aes128-ctr", "hmac-sha2-256-etm@openssh.com"): (
        "0102030405060708090a0b0c0d0e0f10",
        "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf",
        "303132333435363738393a3b3c3d3e3f404142434445464748494a4b4c4d4e4f",
        [
            (
                3,
                "000000200e050000000c7373682d7573657261757468404142434445464748494a4b4c4d",
                "00000020486ed3a94a138910f31e85624fe12263c00d2ca562c55e1daa428d5cf46bb48da8daea9abe5b52ada9bbbe8485620a38c62da1b6c4ada9be02e9104694298f4a",
            ),
            (
                4,
                "00000030065e000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f2021222324252627404142434445",
                "000000306f02e0f5dde01b2d5a20ed14e656ba78251b149e9d6b529127b19a82d37426c2e01e385edb8821fb87b004dfcb26b4851475891b70d80b1bfdd01e9dfdf8c673385b40832c0462abfbb659bfe4aa55ae",
            ),
        ],
    ),
    ("aes128-ctr", "hmac-sha2-512-etm@openssh.com"): (
        "0102030405060708090a0b0c0d0e0f10",
        "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf",
        "303132333435363738393a3b3c3d3e3f404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f606162636465666768696a6b6c6d6e6f",
        [
            (
                3,
                "000000200e050000000c7373682d7573657261757468404142434445464748494a4b4c4d",
                "00000020486ed3a94a138910f31e85624fe12263c00d2ca562c55e1daa428d5cf46bb48d9233ca26c1b97e06747e4af24ec177be83c6de23f3ae0cce0541441b454d6a26a8407ef4fe6507c61dc42290a9456246b2127a2da9417a3436fa6ce385a566fa",
            ),
            (
                4,
                "00000030065e000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f2021222324252627404142434445",
                "000000306f02e0f5dde01b2d5a20ed14e656ba78251b149e9d6b529127b19a82d37426c2e01e385edb8821fb87b004dfcb26b48558ef1039900f959a30f41a07063dc20041b850a84287f2eb7b2ffc584fe73e8c775994e161f2ea75a67fcb553ab1bb29b5dea60d69bf76fff637785523d56e35",
            ),
        ],
    ),
    ("aes256-ctr", "hmac-sha2-256-etm@openssh.com"): (
        "0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20",
        "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf",
        "303132333435363738393a3b3c3d3e3f404142434445464748494a4b4c4d4e4f",
        [
            (
                3,
                "000000200e050000000c7373682d7573657261757468404142434445464748494a4b4c4d",
                "00000020ac3921dded65a42275377633209ca6dc40f7996b926fe6c3637cc7938920cd279fbe4c8b5f03352fb0ecee9aaf09a5f8b0695cb2d14a168abf2ebb2ce7730cdf",
            ),
            (
                4,
                "00000030065e000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f2021222324252627404142434445",
                "00000030dead5dad1d9281811a89670797c38c821c1943a61de2ba48d54df5c8d52045f944db0ac1a74d5919d4d8fb87b168d6ad67abe9a7c05df9edeed46aa9ace19b80f6b372b87093288756d68c0f764a2f9b",
            ),
        ],
    ),
    ("aes256-ctr", "hmac-sha2-512-etm@openssh.com"): (
        "0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20",
        "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf",
        "303132333435363738393a3b3c3d3e3f404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f606162636465666768696a6b6c6d6e6f",
        [
            (
                3,
                "000000200e050000000c7373682d7573657261757468404142434445464748494a4b4c4d",
                "00000020ac3921dded65a42275377633209ca6dc40f7996b926fe6c3637cc7938920cd278e63a8a268162ceda20b48744f7ad45a22db079899caa7e973384a996af5873c55e509b725570e2255f9eb20af5ceb63b00db6c6cf3e8e30ac1f4122d36e9932",
            ),
            (
                4,
                "00000030065e000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f2021222324252627404142434445",
                "00000030dead5dad1d9281811a89670797c38c821c1943a61de2ba48d54df5c8d52045f944db0ac1a74d5919d4d8fb87b168d6ad25793b8c7682b1a40fbb45a78d397063e8bad0482a2eece7b7980b89b1213fa8e31c67949e1c8974cb73adf307f0d59f7f14486d5536603ede337dd8d8804d9b",
            ),
        ],
    ),
}


def aeadPair(name: str, key: bytes, iv: bytes) -> tuple[IPacketProtection, IPacketProtection]:
    """
    @return: a sending and a receiving protection for the AEAD cipher.
    """
    if name.startswith("chacha20"):
        return ChaCha20Poly1305Protection(key), ChaCha20Poly1305Protection(key)
    return AESGCMProtection(key, iv), AESGCMProtection(key, iv)


def etmPair(
    cipher: str, mac: str, key: bytes, iv: bytes, macKey: bytes
) -> tuple[IPacketProtection, IPacketProtection]:
    """
    @return: a sending and a receiving encrypt-then-MAC protection.
    """
    assert cipher.endswith("-ctr")

    def context() -> Cipher:  # type: ignore[type-arg]
        return Cipher(algorithms.AES(key), modes.CTR(iv))

    return (
        EncryptThenMAC(context().encryptor().update, 16, mac.encode(), macKey),
        EncryptThenMAC(context().decryptor().update, 16, mac.encode(), macKey),
    )


def allPairs() -> list[tuple[str, tuple[IPacketProtection, IPacketProtection], list]]:  # type: ignore[type-arg]
    """
    @return: (name, (sender, receiver), vectors) for every construction.
    """
    pairs = []
    for name, (key, iv, vectors) in AEAD_VECTORS.items():
        pairs.append((name, aeadPair(name, bytes.fromhex(key), bytes.fromhex(iv)), vectors))
    for (cipher, mac), (key, iv, macKey, vectors) in ETM_VECTORS.items():
        pair = etmPair(cipher, mac, bytes.fromhex(key), bytes.fromhex(iv), bytes.fromhex(macKey))
        pairs.append((f"{cipher} {mac}", pair, vectors))
    return pairs


class KnownAnswerTests(SynchronousTestCase):
    """
    Every construction seals and opens packets exactly as AsyncSSH does.
    """

    def test_interface(self) -> None:
        """
        Each construction provides L{IPacketProtection}.
        """
        for name, pair, _ in allPairs():
            for protection in pair:
                self.assertTrue(verifyObject(IPacketProtection, protection), name)

    def test_seal(self) -> None:
        """
        Sealing each packet in turn gives the known wire bytes.
        """
        for name, (sender, _), vectors in allPairs():
            for sequence, packet, wire in vectors:
                self.assertEqual(
                    sender.seal(sequence, bytes.fromhex(packet)).hex(), wire, (name, sequence)
                )

    def test_open(self) -> None:
        """
        Opening the known wire bytes gives back each packet after its length
        field, and its length is read from its first 4 bytes (decrypted, for
        ChaCha20-Poly1305).
        """
        for name, (_, receiver), vectors in allPairs():
            for sequence, packet, wire in vectors:
                data = bytes.fromhex(wire)
                self.assertEqual(
                    receiver.packetLength(sequence, data[:4]),
                    len(bytes.fromhex(packet)) - 4,
                    (name, sequence),
                )
                self.assertEqual(receiver.open(sequence, data), bytes.fromhex(packet)[4:], name)

    def test_tampered(self) -> None:
        """
        A packet with any one bit changed, in its length, its body or its
        tag, or (but for AES-GCM, whose nonce is its own counter) opened
        under another sequence number, is refused.
        """
        for name, (_, _), vectors in allPairs():
            sequence, _, wire = vectors[0]
            data = bytes.fromhex(wire)
            for position in (0, 3, 4, len(data) // 2, len(data) - 1):
                for bit in (0x01, 0x80):
                    # A fresh receiver each time: AES-GCM's counter and
                    # AES-CTR's stream move on with every packet opened.
                    receiver = self._receiver(name)
                    tampered = bytearray(data)
                    tampered[position] ^= bit
                    self.assertIsNone(receiver.open(sequence, bytes(tampered)), (name, position))
            if "gcm" not in name:
                # AES-GCM's nonce is its own counter, not the sequence
                # number: a reordered packet fails as a tampered one.
                self.assertIsNone(self._receiver(name).open(sequence + 1, data), name)

    def _receiver(self, name: str) -> IPacketProtection:
        for candidate, (_, receiver), _ in allPairs():
            if candidate == name:
                return receiver
        raise KeyError(name)


class PacketCiphersTests(SynchronousTestCase):
    """
    L{PacketCiphers} builds a protection only where Conch has none.
    """

    KEYS = (bytes(range(64)), bytes(range(64, 128)), bytes(range(1, 65)), bytes(range(2, 66)))

    def setKeys(self, ciphers: PacketCiphers) -> PacketCiphers:
        iv, key, integrity = self.KEYS[0], self.KEYS[1], self.KEYS[2]
        ciphers.setKeys(iv, key, iv, key, integrity, integrity)
        return ciphers

    def test_aead(self) -> None:
        """
        AES-GCM and ChaCha20-Poly1305 get their protection both ways, with
        their block sizes for the padding, and no MAC.
        """
        gcm = self.setKeys(
            PacketCiphers(
                b"aes256-gcm@openssh.com", b"aes128-gcm@openssh.com", IMPLICIT_MAC, IMPLICIT_MAC
            )
        )
        self.assertIsInstance(gcm.outProtection, AESGCMProtection)
        self.assertIsInstance(gcm.inProtection, AESGCMProtection)
        self.assertEqual((gcm.encBlockSize, gcm.decBlockSize), (16, 16))
        chacha = self.setKeys(
            PacketCiphers(
                b"chacha20-poly1305@openssh.com",
                b"chacha20-poly1305@openssh.com",
                IMPLICIT_MAC,
                IMPLICIT_MAC,
            )
        )
        self.assertIsInstance(chacha.outProtection, ChaCha20Poly1305Protection)
        self.assertEqual(chacha.encBlockSize, 8)

    def test_mixed(self) -> None:
        """
        Each direction is chosen on its own: encrypt-then-MAC one way,
        Conch's encrypt-and-MAC the other.
        """
        ciphers = self.setKeys(
            PacketCiphers(
                b"aes128-ctr", b"aes256-ctr", b"hmac-sha2-256-etm@openssh.com", b"hmac-sha2-256"
            )
        )
        self.assertIsInstance(ciphers.outProtection, EncryptThenMAC)
        self.assertIsNone(ciphers.inProtection)
        self.assertEqual(ciphers.verifyDigestSize, 32)

    def test_keyedMACsAsConch(self) -> None:
        """
        Encrypt-and-MAC's MACs, computed from a keyed prototype, equal
        Conch's own for each of its MACs, packet after packet, and a MAC
        that differs in one bit, or is for another sequence number, is
        refused.
        """
        from twisted.conch.ssh.transport import SSHCiphers

        for name in (b"hmac-sha2-256", b"hmac-sha2-512", b"hmac-sha1"):
            ours = self.setKeys(PacketCiphers(b"aes128-ctr", b"aes128-ctr", name, name))
            conch = SSHCiphers(b"aes128-ctr", b"aes128-ctr", name, name)
            iv, key, integrity = self.KEYS[0], self.KEYS[1], self.KEYS[2]
            conch.setKeys(iv, key, iv, key, integrity, integrity)
            for seqid, packet in enumerate([b"", b"x" * 33, bytes(range(256)) * 130]):
                mac = ours.makeMAC(seqid, packet)
                self.assertEqual(mac, conch.makeMAC(seqid, packet))
                self.assertTrue(ours.verify(seqid, packet, mac))
                self.assertFalse(ours.verify(seqid + 1, packet, mac))
                flipped = bytes([mac[0] ^ 1]) + mac[1:]
                self.assertFalse(ours.verify(seqid, packet, flipped))

    def test_conch(self) -> None:
        """
        AES-CTR with C{hmac-sha2-*} is left to Conch in both directions.
        """
        ciphers = self.setKeys(
            PacketCiphers(b"aes128-ctr", b"aes128-ctr", b"hmac-sha2-512", b"hmac-sha2-256")
        )
        self.assertIsNone(ciphers.outProtection)
        self.assertIsNone(ciphers.inProtection)
