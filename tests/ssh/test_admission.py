"""
Tests for L{twisted_s3sftp.ssh.admission}: caps on unauthenticated
connections, per-source penalties and per-user caps.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from twisted_s3sftp.ssh.admission import (
    AUTH_FAILED,
    GRACE_EXCEEDED,
    NO_AUTH,
    Admission,
    Limits,
    parsePenalties,
    parseStartups,
    sourceOf,
)


def admission(clock: Clock, chance: float = 1.0, **limits: object) -> Admission:
    """
    @param chance: what the random source always returns.
    @return: an L{Admission} on C{clock} with the given limits.
    """
    return Admission(Limits(**limits), clock.seconds, lambda: chance)  # type: ignore[arg-type]


class AdmissionTests(SynchronousTestCase):
    """
    L{Admission} decides whether each new connection may start.
    """

    def test_perSource(self) -> None:
        """
        One source may hold only C{perSourceStartups} connections that have
        not logged in; others are unaffected, and one that logs in or
        ends frees its place.
        """
        a = admission(Clock(), perSourceStartups=2)
        self.assertIsNone(a.admit("10.0.0.1"))
        self.assertIsNone(a.admit("10.0.0.1"))
        self.assertIn("from this source", a.admit("10.0.0.1") or "")
        self.assertIsNone(a.admit("10.0.0.2"))
        self.assertIsNone(a.loggedIn("10.0.0.1", "alice"))
        self.assertIsNone(a.admit("10.0.0.1"))
        a.ended("10.0.0.1", None)
        self.assertIsNone(a.admit("10.0.0.1"))
        self.assertEqual(a.unauthenticated, 3)

    def test_ipv6Blocks(self) -> None:
        """
        IPv6 addresses count by /64; an IPv4-mapped address counts as its
        IPv4 address.
        """
        self.assertEqual(sourceOf("2001:db8::1"), sourceOf("2001:db8::ffff:2"))
        self.assertNotEqual(sourceOf("2001:db8::1"), sourceOf("2001:db8:0:1::1"))
        self.assertEqual(sourceOf("::ffff:10.0.0.1"), "10.0.0.1")
        self.assertEqual(sourceOf("fe80::1%eth0"), sourceOf("fe80::2"))
        a = admission(Clock(), perSourceStartups=1)
        self.assertIsNone(a.admit("2001:db8::1"))
        self.assertIsNotNone(a.admit("2001:db8::2"))

    def test_startups(self) -> None:
        """
        Across sources, from C{start} unauthenticated connections on, new
        ones are dropped with a probability rising from C{rate} percent to
        all at C{full} (OpenSSH's MaxStartups).
        """
        drops = admission(Clock(), chance=0.29, startups=(2, 30, 4), perSourceStartups=9)
        self.assertIsNone(drops.admit("10.0.0.1"))
        self.assertIsNone(drops.admit("10.0.0.2"))
        self.assertIn("random early drop", drops.admit("10.0.0.3") or "")
        keeps = admission(Clock(), chance=0.30, startups=(2, 30, 4), perSourceStartups=9)
        for n in range(3):
            self.assertIsNone(keeps.admit(f"10.0.0.{n}"))
        # At 3 of 4 the chance of a drop is 65 %.
        self.assertIn("random early drop", keeps.admit("10.0.0.9") or "")
        lucky = admission(Clock(), chance=0.99, startups=(2, 30, 4), perSourceStartups=9)
        for n in range(4):
            self.assertIsNone(lucky.admit(f"10.0.0.{n}"))
        self.assertEqual(lucky.admit("10.0.0.9"), "too many unauthenticated connections")

    def test_penalties(self) -> None:
        """
        Connections that end without logging in earn their source
        penalties that add up; past C{minPenalty} outstanding the source
        is refused until the penalty has run out; other sources are
        unaffected.
        """
        clock = Clock()
        a = admission(clock)
        for _ in range(3):
            self.assertIsNone(a.admit("10.0.0.1"))
            a.ended("10.0.0.1", AUTH_FAILED)
        # 15 s outstanding: not more than the minimum yet.
        self.assertIsNone(a.admit("10.0.0.1"))
        a.ended("10.0.0.1", NO_AUTH)
        self.assertIn("penalised", a.admit("10.0.0.1") or "")
        self.assertIsNone(a.admit("10.0.0.2"))
        clock.advance(15.5)
        self.assertIn("penalised", a.admit("10.0.0.1") or "")
        clock.advance(0.6)
        self.assertIsNone(a.admit("10.0.0.1"))

    def test_penaltyCapAndKinds(self) -> None:
        """
        A penalty never exceeds C{maxPenalty}; running out of login time
        costs C{gracePenalty}; a connection ended cleanly costs nothing.
        """
        clock = Clock()
        a = admission(clock, maxPenalty=30.0)
        for _ in range(20):
            a.admit("10.0.0.1")
            a.ended("10.0.0.1", GRACE_EXCEEDED)
        clock.advance(30.1)
        self.assertIsNone(a.admit("10.0.0.1"))
        a.ended("10.0.0.1", None)
        self.assertIsNone(a.admit("10.0.0.1"))

    def test_exempt(self) -> None:
        """
        Sources in an exempt network are never penalised, nor refused for
        a penalty of the IPv6 /64 they are in.
        """
        a = admission(Clock(), exempt=["127.0.0.0/30"])
        for _ in range(4):
            self.assertIsNone(a.admit("127.0.0.1"))
            a.ended("127.0.0.1", AUTH_FAILED)
            self.assertIsNone(a.admit("127.0.0.9"))
            a.ended("127.0.0.9", AUTH_FAILED)
        self.assertIsNone(a.admit("127.0.0.1"))
        self.assertIsNotNone(a.admit("127.0.0.9"))
        six = admission(Clock(), exempt=["2001:db8::5"])
        for _ in range(4):
            for host in ("2001:db8::5", "::ffff:127.0.0.1"):
                six.admit(host)
                six.ended(host, AUTH_FAILED)
        self.assertIsNone(six.admit("2001:db8::5"))
        self.assertIsNotNone(six.admit("127.0.0.1"))
        for _ in range(4):
            six.admit("2001:db8::6")
            six.ended("2001:db8::6", AUTH_FAILED)
        # Its /64 is penalised, the exempt address in it is not.
        self.assertIsNotNone(six.admit("2001:db8::7"))
        self.assertIsNone(six.admit("2001:db8::5"))

    def test_perUser(self) -> None:
        """
        A user may hold C{perUser} logged-in connections; one more is
        refused until one logs out.
        """
        a = admission(Clock(), perUser=2)
        for _ in range(2):
            a.admit("10.0.0.1")
            self.assertIsNone(a.loggedIn("10.0.0.1", "alice"))
        a.admit("10.0.0.1")
        self.assertIn("too many connections", a.loggedIn("10.0.0.1", "alice") or "")
        self.assertEqual(a.unauthenticated, 0)
        a.admit("10.0.0.1")
        self.assertIsNone(a.loggedIn("10.0.0.1", "bob"))
        a.loggedOut("alice")
        a.admit("10.0.0.1")
        self.assertIsNone(a.loggedIn("10.0.0.1", "alice"))


class ParsingTests(SynchronousTestCase):
    """
    The option syntaxes, as OpenSSH spells them.
    """

    def test_startups(self) -> None:
        """
        C{full} or C{start:rate:full}.
        """
        self.assertEqual(parseStartups("10:30:100"), (10, 30, 100))
        self.assertEqual(parseStartups("50"), (50, 100, 50))
        for bad in ("", "1:2", "a:b:c"):
            self.assertRaises(ValueError, parseStartups, bad)
        self.assertRaises(ValueError, Limits, startups=(10, 30, 5))

    def test_penalties(self) -> None:
        """
        C{name:seconds} pairs, C{s} suffix allowed, or C{no}.
        """
        self.assertEqual(
            parsePenalties("authfail:5s noauth:1 grace-exceeded:10 min:15 max:600"),
            {
                "authFailPenalty": 5.0,
                "noAuthPenalty": 1.0,
                "gracePenalty": 10.0,
                "minPenalty": 15.0,
                "maxPenalty": 600.0,
            },
        )
        self.assertEqual(parsePenalties("no")["authFailPenalty"], 0.0)
        for bad in ("crash:5", "authfail:x", "authfail:-1"):
            self.assertRaises(ValueError, parsePenalties, bad)

    def test_limits(self) -> None:
        """
        Limits that make no sense are refused.
        """
        for bad in ({"loginGrace": 0}, {"maxChannels": 0}, {"exempt": ["nonsense"]}):
            self.assertRaises(ValueError, Limits, **bad)  # type: ignore[arg-type]
