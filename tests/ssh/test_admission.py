"""
Tests for L{twisted_s3sftp.ssh.admission}: caps on unauthenticated
connections, per-source penalties and per-user caps.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from twisted_s3sftp.ssh.admission import (
    AUTH_FAILED,
    GRACE_EXCEEDED,
    NO_AUTH,
    Admission,
    Limits,
    Waiting,
    parsePenalties,
    parseStartups,
    sourceOf,
)


def admission(clock: Clock, **limits: object) -> Admission:
    """
    @return: an L{Admission} on C{clock} with the given limits.
    """
    return Admission(Limits(**limits), clock.seconds)  # type: ignore[arg-type]


class Grants:
    """
    Records which queued connections were granted a slot, in order.
    """

    def __init__(self) -> None:
        self.order: list[str] = []

    def callback(self, name: str) -> Callable[[], None]:
        """
        @return: a C{granted} callback recording C{name}.
        """
        return lambda: self.order.append(name)


class AdmissionTests(SynchronousTestCase):
    """
    L{Admission} decides whether each new connection may start now, must
    wait, or is refused.
    """

    def test_perSource(self) -> None:
        """
        One source is served only C{perSourceStartups} connections that
        have not logged in; the next waits, others are unaffected, and one
        that logs in or ends frees its place for the one waiting.
        """
        grants = Grants()
        a = admission(Clock(), perSourceStartups=2)
        self.assertIsNone(a.admit("10.0.0.1"))
        self.assertIsNone(a.admit("10.0.0.1"))
        self.assertIsInstance(a.admit("10.0.0.1", grants.callback("third")), Waiting)
        self.assertIsNone(a.admit("10.0.0.2"))
        self.assertEqual((a.unauthenticated, a.queued), (3, 1))
        self.assertIsNone(a.loggedIn("10.0.0.1", "alice"))
        self.assertEqual(grants.order, ["third"])
        self.assertEqual((a.unauthenticated, a.queued), (3, 0))
        a.ended("10.0.0.1", None)
        self.assertIsNone(a.admit("10.0.0.1"))
        self.assertEqual(a.unauthenticated, 3)

    def test_cannotWait(self) -> None:
        """
        A connection that cannot wait (no C{granted} callback) is refused
        over a cap instead of queued.
        """
        a = admission(Clock(), perSourceStartups=1)
        a.admit("10.0.0.1")
        self.assertIn("too many", a.admit("10.0.0.1") or "")

    def test_firstComeFirstServed(self) -> None:
        """
        Over the global cap, connections are served in arrival order,
        skipping those whose source is still at its own cap: a source
        with many waiting does not delay another's.
        """
        grants = Grants()
        a = admission(Clock(), maxStartups=2, perSourceStartups=1)
        a.admit("10.0.0.1")
        a.admit("10.0.0.2")
        for name, host in [("1b", "10.0.0.1"), ("1c", "10.0.0.1"), ("3a", "10.0.0.3")]:
            self.assertIsInstance(a.admit(host, grants.callback(name)), Waiting)
        # 10.0.0.2's slot frees: 10.0.0.1 is still at its cap, so 3a goes.
        a.ended("10.0.0.2", None)
        self.assertEqual(grants.order, ["3a"])
        a.ended("10.0.0.1", None)
        self.assertEqual(grants.order, ["3a", "1b"])
        a.ended("10.0.0.3", None)
        self.assertEqual(grants.order, ["3a", "1b"])
        a.ended("10.0.0.1", None)
        self.assertEqual(grants.order, ["3a", "1b", "1c"])
        self.assertEqual((a.unauthenticated, a.queued), (1, 0))

    def test_queueBounds(self) -> None:
        """
        Beyond C{perSourceQueue} waiting from one source, or C{maxQueued}
        in all, a connection is refused at once; a waiting connection
        that ends gives up its place and is never granted.
        """
        grants = Grants()
        a = admission(Clock(), perSourceStartups=1, perSourceQueue=2, maxQueued=3)
        a.admit("10.0.0.1")
        first = a.admit("10.0.0.1", grants.callback("1a"))
        a.admit("10.0.0.1", grants.callback("1b"))
        self.assertIn("waiting from this source", a.admit("10.0.0.1", grants.callback("x")) or "")
        a.admit("10.0.0.2")
        a.admit("10.0.0.2", grants.callback("2a"))
        self.assertEqual(a.admit("10.0.0.3", grants.callback("x")), None)
        self.assertEqual(a.queued, 3)
        self.assertIn(
            "too many connections waiting", a.admit("10.0.0.2", grants.callback("x")) or ""
        )
        assert isinstance(first, Waiting)
        first.cancel()
        first.cancel()
        self.assertEqual(a.queued, 2)
        a.ended("10.0.0.1", None)
        self.assertEqual(grants.order, ["1b"])

    def test_penalisedRefusedAtOnce(self) -> None:
        """
        A penalised source is refused at once, not queued, even with
        slots free.
        """
        a = admission(Clock())
        for _ in range(4):
            a.admit("10.0.0.1")
            a.ended("10.0.0.1", AUTH_FAILED)
        self.assertIn("penalised", a.admit("10.0.0.1", lambda: None) or "")
        self.assertEqual(a.queued, 0)

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
        Across sources, at most C{maxStartups} connections that have not
        logged in are served; the next waits for one of them.
        """
        grants = Grants()
        a = admission(Clock(), maxStartups=3, perSourceStartups=9)
        for n in range(3):
            self.assertIsNone(a.admit(f"10.0.0.{n}"))
        self.assertIsInstance(a.admit("10.0.0.9", grants.callback("late")), Waiting)
        self.assertIsNone(a.loggedIn("10.0.0.0", "alice"))
        self.assertEqual(grants.order, ["late"])

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
        C{full} or C{start:rate:full}, which is read as C{full}: the cap.
        """
        self.assertEqual(parseStartups("10:30:100"), 100)
        self.assertEqual(parseStartups("50"), 50)
        for bad in ("", "1:2", "a:b:c", "10:30:5", "1:101:5"):
            self.assertRaises(ValueError, parseStartups, bad)
        self.assertRaises(ValueError, Limits, maxStartups=0)

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

    def test_fitted(self) -> None:
        """
        Limits that fit a connection budget are kept; otherwise starting
        and queued connections are cut to a quarter of it each.
        """
        self.assertEqual(Limits().fitted(1 << 20), Limits())
        fitted = Limits().fitted(64)
        self.assertEqual(
            (fitted.maxStartups, fitted.perSourceStartups, fitted.maxQueued, fitted.perSourceQueue),
            (16, 10, 16, 16),
        )
        self.assertEqual(Limits().fitted(2).maxStartups, 1)

    def test_limits(self) -> None:
        """
        Limits that make no sense are refused.
        """
        for bad in ({"loginGrace": 0}, {"maxChannels": 0}, {"exempt": ["nonsense"]}):
            self.assertRaises(ValueError, Limits, **bad)  # type: ignore[arg-type]
