"""
Tests for L{twisted_s3sftp.ssh.keyoptions} and L{twisted_s3sftp.ssh.addresses}:
key line options and source-address patterns.
"""

from __future__ import annotations

import calendar
import os
import time

from twisted.trial.unittest import SynchronousTestCase

from twisted_s3sftp.ssh.addresses import allowed, parseAddress, parsePatternList
from twisted_s3sftp.ssh.keyoptions import (
    formatExpiry,
    parseExpiry,
    parseOptions,
    splitOptions,
)


class AddressTests(SynchronousTestCase):
    """
    Pattern lists as OpenSSH's C{from=} reads them, without DNS.
    """

    def test_matching(self) -> None:
        """
        An address is allowed when it matches a pattern and no negated
        one; CIDR, literals and wildcards match by address family.
        """
        cases = [
            ("10.0.0.0/8", "10.1.2.3", True),
            ("10.0.0.0/8", "11.1.2.3", False),
            ("10.0.0.0/8,!10.0.0.13", "10.0.0.13", False),
            ("!10.0.0.13,10.0.0.0/8", "10.0.0.12", True),
            ("!10.0.0.13", "10.0.0.12", False),
            ("192.0.2.7", "192.0.2.7", True),
            ("192.0.2.*", "192.0.2.200", True),
            ("192.0.2.?", "192.0.2.20", False),
            ("*", "2001:db8::1", True),
            ("2001:db8::/32", "2001:db8:1::5", True),
            ("2001:db8::/32", "10.0.0.1", False),
            ("10.0.0.0/8", "::ffff:10.0.0.1", True),
            ("2001:DB8::*", "2001:db8::abcd", True),
        ]
        for patterns, host, expected in cases:
            self.assertEqual(allowed(parsePatternList(patterns), host), expected, (patterns, host))

    def test_unknownAddress(self) -> None:
        """
        A connection with no IP address (a UNIX socket) matches no list.
        """
        patterns = parsePatternList("*")
        self.assertFalse(allowed(patterns, None))
        self.assertFalse(allowed(patterns, "not-an-address"))
        self.assertIsNone(parseAddress("unix"))

    def test_hostNamesRefused(self) -> None:
        """
        A pattern that could name a host is an error: there is no DNS, and
        ignoring it would match nothing (or, negated, everything).
        """
        for bad in ("host.example.com", "*.example.com", "!office", "db*", "cafe*.de", "", "!"):
            self.assertRaises(ValueError, parsePatternList, bad)

    def test_strictNetworks(self) -> None:
        """
        As in sshd, a network with host bits set is an error (not the
        network around it), and so is a netmask written as an address; an
        IPv4-mapped pattern, which could never match (clients are matched
        in their IPv4 form), is refused.
        """
        for bad in ("10.0.0.1/8", "10.0.0.0/255.0.0.0", "10.0.0.0/0.0.0.255", "::ffff:10.0.0.13"):
            self.assertRaises(ValueError, parsePatternList, bad)


class OptionTests(SynchronousTestCase):
    """
    The options of a key line.
    """

    def test_split(self) -> None:
        """
        The options end at the first white space outside quotes; quoted
        values may hold spaces, commas and escaped quotes.
        """
        self.assertEqual(
            splitOptions('from="a b",no-pty ssh-ed25519 AAAA c'),
            ('from="a b",no-pty', "ssh-ed25519 AAAA c"),
        )
        self.assertEqual(
            splitOptions('command="x \\" y" ssh-rsa K'), ('command="x \\" y"', "ssh-rsa K")
        )
        self.assertRaises(ValueError, splitOptions, 'from="10.0.0.1 ssh-ed25519 K')

    def test_enforced(self) -> None:
        """
        C{from=} and C{expiry-time=} are kept; names are case-insensitive;
        the no-op restrictions are accepted; the earliest expiry holds.
        """
        options = parseOptions(
            'RESTRICT,From="10.0.0.0/8",no-pty,expiry-time="20300101Z",'
            'expiry-time="20290101Z",no-X11-forwarding'
        )
        self.assertEqual(options.fromText, "10.0.0.0/8")
        self.assertEqual(options.expires, calendar.timegm((2029, 1, 1, 0, 0, 0)))
        self.assertIsNone(options.refusal("10.1.1.1", time.time()))
        self.assertIn("does not match", options.refusal("192.0.2.1", time.time()) or "")
        self.assertIn("expired at 2029-01-01T00:00:00Z", options.refusal("10.1.1.1", 2e9) or "")

    def test_refused(self) -> None:
        """
        An option the server cannot honour, a malformed list, a second
        C{from=} or a flag given a value is an error.
        """
        for bad in (
            'command="internal-sftp"',
            "cert-authority",
            'principals="a"',
            'permitopen="h:1"',
            "no-touch-required",
            "port-forwarding",
            'from="10.0.0.1",from="10.0.0.2"',
            'restrict="yes"',
            "from",
            "no-pty,",
            "no-pty,,restrict",
            'expiry-time="2029"',
            'expiry-time="20291301"',
        ):
            self.assertRaises(ValueError, parseOptions, bad)

    def test_expiryLocalTime(self) -> None:
        """
        An expiry without C{Z} is in the server's time zone, as sshd reads
        it; with C{Z}, in UTC.  L{formatExpiry} writes UTC.
        """
        previous = os.environ.get("TZ")
        os.environ["TZ"] = "Asia/Kolkata"
        time.tzset()
        try:
            local = parseExpiry("202901011200")
        finally:
            if previous is None:
                del os.environ["TZ"]
            else:
                os.environ["TZ"] = previous
            time.tzset()
        self.assertEqual(local, calendar.timegm((2029, 1, 1, 6, 30, 0)))
        self.assertEqual(parseExpiry("20290101123045Z"), calendar.timegm((2029, 1, 1, 12, 30, 45)))
        self.assertEqual(parseExpiry("20290101z"), parseExpiry("20290101UTC"))
        self.assertEqual(parseExpiry("20290101z"), calendar.timegm((2029, 1, 1, 0, 0, 0)))
        self.assertEqual(formatExpiry(parseExpiry("20290101123045Z")), "20290101123045Z")
