"""
Tests for L{twisted_s3sftp.ssh.kex}: RFC 3526's groups computed from their
definition, and registered with Conch.
"""

from __future__ import annotations

from twisted.conch.ssh import _kex
from twisted.trial.unittest import SynchronousTestCase

from twisted_s3sftp.ssh.kex import FIXED_GROUPS, modpPrime, moduli, registerKeyExchanges


class GroupTests(SynchronousTestCase):
    """
    The primes are RFC 3526's.
    """

    def test_group14(self) -> None:
        """
        The 2048-bit prime equals the one Conch carries for group 14.
        """
        self.assertEqual(
            modpPrime(2048), _kex.getDHGeneratorAndPrime(b"diffie-hellman-group14-sha1")[1]
        )

    def test_shape(self) -> None:
        """
        Each prime has its size, and its top and bottom 64 bits all ones,
        as the definition guarantees.
        """
        for bits in (2048, 4096, 8192):
            prime = modpPrime(bits)
            self.assertEqual(prime.bit_length(), bits)
            self.assertEqual(prime >> (bits - 64), 2**64 - 1)
            self.assertEqual(prime & (2**64 - 1), 2**64 - 1)

    def test_safePrimes(self) -> None:
        """
        The 4096- and 8192-bit numbers pass a Fermat test, and so do their
        halves: they are (probable) safe primes, which a wrong digit of pi
        or offset would not give.
        """
        for bits in (4096, 8192):
            prime = modpPrime(bits)
            half = (prime - 1) // 2
            self.assertEqual(pow(2, prime - 1, prime), 1, bits)
            self.assertEqual(pow(3, half - 1, half), 1, bits)

    def test_registered(self) -> None:
        """
        After L{registerKeyExchanges}, Conch knows each exchange as a fixed
        group with its hash; registering again changes nothing.
        """
        registerKeyExchanges()
        first = {name: _kex.getKex(name) for name in FIXED_GROUPS}
        registerKeyExchanges()
        for name, (bits, digest) in FIXED_GROUPS.items():
            self.assertIs(_kex.getKex(name), first[name])
            self.assertTrue(_kex.isFixedGroup(name))
            self.assertEqual(_kex.getDHGeneratorAndPrime(name), (2, modpPrime(bits)))
            self.assertIs(_kex.getHashProcessor(name), digest)

    def test_moduli(self) -> None:
        """
        Group exchange is offered the same three groups.
        """
        self.assertEqual(moduli(), {bits: [(2, modpPrime(bits))] for bits in (2048, 4096, 8192)})


class GroupExchangeTests(SynchronousTestCase):
    """
    Group exchange hands out a group at least as large as asked for.
    """

    def test_choice(self) -> None:
        """
        The smallest group at or above the client's ideal size is chosen
        (OpenSSH asks for 3072 bits with AES-128, and must not get 2048),
        or the largest if none is that large.
        """
        from tests.ssh.test_transport import Harness
        from twisted_s3sftp.ssh.policy import COMPAT

        factory = Harness(self, policy=COMPAT).factory
        for ideal, bits in [(1024, 2048), (2048, 2048), (3072, 4096), (7680, 8192), (9000, 8192)]:
            self.assertEqual(factory.getDHPrime(ideal), (2, modpPrime(bits)), ideal)

    def test_onlyWithPolicy(self) -> None:
        """
        Moduli are offered only when the policy has group exchange.
        """
        from tests.ssh.test_transport import Harness

        self.assertIsNone(Harness(self).factory.primes)
