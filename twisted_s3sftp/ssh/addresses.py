"""
Source-address patterns, as OpenSSH's C{from="..."} writes them, for key
options and a policy's C{allow_from}.

A pattern list is comma-separated.  Each pattern is an IPv4 or IPv6
address, a network in CIDR notation (C{198.51.100.0/24},
C{2001:db8::/32}), or an address with C{*} and C{?} wildcards
(C{10.1.*}); C{!} in front negates it.  An address is allowed when it
matches at least one pattern and no negated one (sshd's C{match_host_and_ip}).

The server does no DNS: a pattern that could name hosts (a letter in
anything but an IPv6 pattern, which has a colon) is an error, so that the
line or file holding it fails closed instead of silently matching nothing,
or, negated, everything.

Pure: no Twisted, no boto3.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re

from attrs import frozen

#: What an address pattern with wildcards may be made of: IPv4 (digits and
#: dots), or IPv6 (hexadecimal digits, with at least one colon).
_WILDCARD4 = re.compile(r"[0-9.*?]+")
_WILDCARD6 = re.compile(r"[0-9a-fA-F.:*?]*:[0-9a-fA-F.:*?]*")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@frozen
class AddressPattern:
    """
    One pattern of a list.

    @ivar text: the pattern as written, without C{!}.
    @ivar negated: whether it was written with C{!}.
    @ivar network: the network (an address is a network of one) it names,
        or L{None} for a wildcard pattern.
    """

    text: str
    negated: bool
    network: Network | None

    def matches(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        """
        @return: whether C{address} matches, C{!} aside.
        """
        if self.network is not None:
            return address.version == self.network.version and address in self.network
        return fnmatch.fnmatchcase(str(address), self.text.lower())


def parsePattern(text: str) -> AddressPattern:
    """
    @param text: one pattern, perhaps with C{!}.
    @return: it, parsed.
    @raise ValueError: for an empty pattern, a bad network, or one that
        names hosts.
    """
    negated = text.startswith("!")
    body = text[1:] if negated else text
    if not body:
        raise ValueError("empty address pattern")
    if "*" in body or "?" in body:
        if not (_WILDCARD4.fullmatch(body) or _WILDCARD6.fullmatch(body)):
            raise ValueError(f"{body!r} names hosts; only addresses are matched (no DNS)")
        return AddressPattern(body, negated, None)
    address, slash, length = body.partition("/")
    if slash and not length.isdigit():
        raise ValueError(f"{body!r}: give a network as address/prefix-length")
    try:
        # As sshd's addr_pton_cidr: a network with host bits set is an
        # error, not the network around it.
        network = ipaddress.ip_network(body, strict=True)
    except ValueError:
        raise ValueError(
            f"{body!r} is not an address or network (host bits set, or a host "
            "name: host names are not matched, there is no DNS)"
        ) from None
    if (
        isinstance(network, ipaddress.IPv6Network)
        and network.network_address.ipv4_mapped is not None
    ):
        # Clients are matched as IPv4 (parseAddress): write the IPv4 form.
        raise ValueError(f"{body!r}: write an IPv4-mapped address in its IPv4 form")
    return AddressPattern(body, negated, network)


def parsePatternList(text: str) -> tuple[AddressPattern, ...]:
    """
    @param text: a comma-separated pattern list, as in C{from="..."}.
    @return: its patterns.
    @raise ValueError: if any is not an address pattern.
    """
    return tuple(parsePattern(part.strip()) for part in text.split(","))


def parseAddress(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """
    @param host: a client address as the transport reports it.
    @return: it, with an IPv4-mapped IPv6 address (a dual-stack listener's
        view of an IPv4 client) as IPv4; L{None} if it is not an address.
    """
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def allowed(patterns: tuple[AddressPattern, ...], host: str | None) -> bool:
    """
    @param patterns: a pattern list.
    @param host: the client's address, or L{None} if it is unknown (a
        connection not over IP), which no list allows.
    @return: whether C{host} matches a pattern and no negated one.
    """
    address = parseAddress(host) if host is not None else None
    if address is None:
        return False
    found = False
    for pattern in patterns:
        if pattern.matches(address):
            if pattern.negated:
                return False
            found = True
    return found
