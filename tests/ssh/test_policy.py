"""
Tests for L{twisted_s3sftp.ssh.policy}: the crypto policy's judgements.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from twisted_s3sftp.ssh.policy import (
    CIPHERS,
    KEY_EXCHANGES,
    MACS,
    hostKeyProblem,
    signatureAccepted,
    userKeyProblem,
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
        self.assertIsNone(hostKeyProblem("Ed25519", 256))
        self.assertIsNone(hostKeyProblem("RSA", 4096))
        self.assertIn("3072", hostKeyProblem("RSA", 2048) or "")
        self.assertIn("not offered", hostKeyProblem("EC", 256) or "")
        self.assertIn("not offered", hostKeyProblem("DSA", 1024) or "")

    def test_userKeys(self) -> None:
        """
        ed25519, ECDSA and RSA of 2048 bits or more; no DSA; no SHA-1
        signatures.
        """
        for accepted in (("Ed25519", 256), ("EC", 384), ("RSA", 2048)):
            self.assertIsNone(userKeyProblem(*accepted))
        self.assertIn("2048", userKeyProblem("RSA", 1024) or "")
        self.assertIn("not accepted", userKeyProblem("DSA", 2048) or "")
        self.assertTrue(signatureAccepted(b"rsa-sha2-256"))
        self.assertFalse(signatureAccepted(b"ssh-rsa"))
        self.assertFalse(signatureAccepted(b"ssh-dss"))
