"""
Tests for L{twisted_s3sftp.ssh.policy}: the crypto policy's judgements.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from twisted_s3sftp.ssh.policy import (
    CIPHERS,
    COMPAT,
    FIPS,
    KEY_EXCHANGES,
    LEGACY,
    MACS,
    MODERN,
    POLICIES,
)


class PolicyTests(SynchronousTestCase):
    """
    What the policy accepts, and the reasons it gives otherwise.
    """

    def test_lists(self) -> None:
        """
        No SHA-1, CBC, NIST or finite-field key exchange is offered; the
        post-quantum hybrid comes first.
        """
        self.assertEqual(KEY_EXCHANGES[0], b"mlkem768x25519-sha256")
        offered = b",".join(KEY_EXCHANGES + CIPHERS + MACS)
        for weak in (b"sha1", b"cbc", b"nistp", b"diffie-hellman", b"md5", b"3des"):
            self.assertNotIn(weak, offered)

    def test_hostKeys(self) -> None:
        """
        ed25519, or RSA of 3072 bits or more.
        """
        self.assertIsNone(MODERN.hostKeyProblem("Ed25519", 256))
        self.assertIsNone(MODERN.hostKeyProblem("RSA", 4096))
        self.assertIn("3072", MODERN.hostKeyProblem("RSA", 2048) or "")
        self.assertIn("not offered", MODERN.hostKeyProblem("EC", 256) or "")
        self.assertIn("not offered", MODERN.hostKeyProblem("DSA", 1024) or "")

    def test_userKeys(self) -> None:
        """
        ed25519, ECDSA and RSA of 2048 bits or more; no DSA; no SHA-1
        signatures.
        """
        for accepted in (("Ed25519", 256), ("EC", 384), ("RSA", 2048)):
            self.assertIsNone(MODERN.userKeyProblem(*accepted))
        self.assertIn("2048", MODERN.userKeyProblem("RSA", 1024) or "")
        self.assertIn("not accepted", MODERN.userKeyProblem("DSA", 2048) or "")
        self.assertTrue(MODERN.signatureAccepted(b"rsa-sha2-256"))
        self.assertFalse(MODERN.signatureAccepted(b"ssh-rsa"))
        self.assertFalse(MODERN.signatureAccepted(b"ssh-dss"))


class NamedPolicyTests(SynchronousTestCase):
    """
    The four named policies and their narrowing.
    """

    def test_fips(self) -> None:
        """
        C{fips} offers FIPS 140-3 approved algorithms only: NIST curves,
        AES, HMAC-SHA-2, ECDSA and RSA; no X25519, ChaCha20 or ed25519.
        """
        offered = b",".join(
            FIPS.keyExchanges
            + FIPS.ciphers
            + FIPS.macs
            + FIPS.hostKeyAlgorithms
            + FIPS.userSignatures
        )
        for name in (b"curve25519", b"mlkem", b"chacha20", b"ed25519", b"sha1"):
            self.assertNotIn(name, offered)
        self.assertIn("not offered", FIPS.hostKeyProblem("Ed25519", 256) or "")
        self.assertIsNone(FIPS.hostKeyProblem("EC", 384))
        self.assertIn("not accepted", FIPS.userKeyProblem("Ed25519", 256) or "")

    def test_compatAndLegacy(self) -> None:
        """
        C{compat} is C{modern} with NIST curves and ECDSA host keys;
        C{legacy} adds SHA-1 on top, and only it does.
        """
        for listName in ("keyExchanges", "ciphers", "macs", "hostKeyAlgorithms", "userSignatures"):
            self.assertTrue(set(getattr(MODERN, listName)) <= set(getattr(COMPAT, listName)))
            self.assertTrue(set(getattr(COMPAT, listName)) <= set(getattr(LEGACY, listName)))
        self.assertIn(b"ecdh-sha2-nistp256", COMPAT.keyExchanges)
        self.assertIsNone(COMPAT.hostKeyProblem("EC", 256))
        sha1 = {b"diffie-hellman-group14-sha1", b"hmac-sha1", b"ssh-rsa"}
        for policy in (MODERN, FIPS, COMPAT):
            names = set(policy.keyExchanges + policy.macs + policy.hostKeyAlgorithms)
            self.assertFalse(names & sha1, policy.name)
        self.assertTrue(LEGACY.signatureAccepted(b"ssh-rsa"))
        self.assertEqual(sorted(POLICIES), ["compat", "fips", "legacy", "modern"])

    def test_narrowed(self) -> None:
        """
        A list replaces (in its own order), C{-a,b} removes, C{^a,b} moves
        to the front, C{+a,b} changes nothing; a name outside the policy, a
        pattern, a name that is not ASCII, or a list that leaves nothing, is
        an error naming the option.
        """
        self.assertEqual(
            MODERN.narrowed(ciphers="aes128-gcm@openssh.com,aes256-ctr").ciphers,
            (b"aes128-gcm@openssh.com", b"aes256-ctr"),
        )
        self.assertEqual(
            MODERN.narrowed(macs="-hmac-sha2-512,hmac-sha2-256").macs,
            (b"hmac-sha2-512-etm@openssh.com", b"hmac-sha2-256-etm@openssh.com"),
        )
        self.assertEqual(
            MODERN.narrowed(ciphers=" ^aes128-ctr ").ciphers[:2],
            (b"aes128-ctr", b"chacha20-poly1305@openssh.com"),
        )
        self.assertEqual(MODERN.narrowed(macs="+hmac-sha2-256").macs, MODERN.macs)
        for value, message in [
            ("+hmac-sha1", "not allowed"),
            ("-*sha1*", "patterns are not supported"),
            ("aes128-ctr,\u00e9", "ASCII"),
        ]:
            e = self.assertRaises(ValueError, MODERN.narrowed, ciphers=value)
            self.assertIn(message, str(e))
            self.assertIn("--ciphers", str(e))
        e = self.assertRaises(ValueError, MODERN.narrowed, keyExchanges="ecdh-sha2-nistp256")
        self.assertIn("--kex-algorithms: ecdh-sha2-nistp256 not allowed", str(e))
        e = self.assertRaises(
            ValueError,
            FIPS.narrowed,
            hostKeyAlgorithms="-" + ",".join(a.decode() for a in FIPS.hostKeyAlgorithms),
        )
        self.assertIn("nothing would be left", str(e))
