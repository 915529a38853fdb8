"""
Who may connect: caps on connections that have not logged in, penalties
for sources that misbehave, and caps on each user's connections.

Modelled on OpenSSH's C{MaxStartups}, C{PerSourceMaxStartups} and
C{PerSourcePenalties}, so that a flood from one address cannot lock out
the others:

  - At most L{Limits.perSourceStartups} unauthenticated
    connections per source, where a source is an IPv4 address or an IPv6
    /64 (one host's usual allocation).
  - Across all sources, C{start:rate:full} as in OpenSSH: from C{start}
    unauthenticated connections on, a new one is dropped with a
    probability growing linearly from C{rate} percent to 100 % at C{full}.
  - A connection that ends without logging in earns its source a penalty:
    L{Limits.authFailPenalty} seconds if it failed to
    authenticate (a wrong key and an unknown user are the same here, so
    penalties reveal nothing about which users exist),
    L{Limits.gracePenalty} if it ran out of login time, and
    L{Limits.noAuthPenalty} if it never tried.  Penalties add up
    and run down in real time, capped at L{Limits.maxPenalty};
    once a source has more than L{Limits.minPenalty} outstanding,
    it is refused until its penalty has run out.  Addresses in
    L{Limits.exempt} are never penalised.
  - At most L{Limits.perUser} logged-in connections per user.

L{Limits} also holds the limits the SSH layer enforces per connection
(login grace, authentication attempts, channels, idle time).

Pure core: the clock and the random source are given; no reactor.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Callable

from attrs import define, field, frozen

#: The most sources penalised at once; past it, new sources go
#: unpenalised (OpenSSH's C{max-sources} with C{overflow permissive}).
MAX_PENALISED = 65536

#: Penalty kinds, as L{Admission.ended} takes them.
AUTH_FAILED = "authfail"
GRACE_EXCEEDED = "grace-exceeded"
NO_AUTH = "noauth"


@frozen
class Limits:
    """
    The limits before and after login, with OpenSSH's defaults where it
    has them.

    @ivar loginGrace: seconds from TCP accept (banner and key exchange
        included) to a successful login (OpenSSH's C{LoginGraceTime}).
    @ivar maxAuthTries: failed authentication attempts per connection;
        the next failure disconnects (C{MaxAuthTries}).
    @ivar startups: C{(start, rate, full)}: unauthenticated connections
        from which random early drop begins, its starting probability in
        percent, and the count at which every new one is refused
        (C{MaxStartups}).
    @ivar perSourceStartups: unauthenticated connections per source
        (C{PerSourceMaxStartups}).
    @ivar perUser: logged-in connections per user.
    @ivar maxChannels: session channels per connection (C{MaxSessions}).
    @ivar idleTimeout: seconds a logged-in connection may send nothing
        before it is closed.
    @ivar authFailPenalty: seconds for a connection that failed to log in.
    @ivar gracePenalty: seconds for one that ran out of login time.
    @ivar noAuthPenalty: seconds for one that never tried to log in.
    @ivar minPenalty: outstanding seconds above which a source is refused.
    @ivar maxPenalty: the most seconds a source can accumulate.
    @ivar exempt: networks never penalised (e.g. a load balancer's
        health checks), as strings such as C{"10.0.0.0/8"}.
    """

    loginGrace: float = 30.0
    maxAuthTries: int = 6
    startups: tuple[int, int, int] = (10, 30, 100)
    perSourceStartups: int = 4
    perUser: int = 16
    maxChannels: int = 4
    idleTimeout: float = 900.0
    authFailPenalty: float = 5.0
    gracePenalty: float = 10.0
    noAuthPenalty: float = 1.0
    minPenalty: float = 15.0
    maxPenalty: float = 600.0
    exempt: tuple[str, ...] = field(default=(), converter=tuple)

    def __attrs_post_init__(self) -> None:
        start, rate, full = self.startups
        if not (0 < start <= full and 0 <= rate <= 100):
            raise ValueError(
                "startups must be start:rate:full with 0 < start <= full and rate a percentage"
            )
        for name in ("loginGrace", "idleTimeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        for name in ("maxAuthTries", "perSourceStartups", "perUser", "maxChannels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for network in self.exempt:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise ValueError(f"{network!r} is not a network") from None


def parsePenalties(text: str) -> dict[str, float]:
    """
    Parse penalties in OpenSSH's C{PerSourcePenalties} syntax, e.g.
    C{"authfail:5 noauth:1 grace-exceeded:10 min:15 max:600"}, or C{"no"}
    for none.

    @return: keyword arguments for L{Limits}.
    @raise ValueError: for an unknown name or a bad number.
    """
    names = {
        AUTH_FAILED: "authFailPenalty",
        GRACE_EXCEEDED: "gracePenalty",
        NO_AUTH: "noAuthPenalty",
        "min": "minPenalty",
        "max": "maxPenalty",
    }
    if text.strip() == "no":
        return {"authFailPenalty": 0.0, "gracePenalty": 0.0, "noAuthPenalty": 0.0}
    found = {}
    for item in text.replace(",", " ").split():
        name, _, value = item.partition(":")
        if name not in names:
            raise ValueError(f"unknown penalty {name!r} (known: {', '.join(names)})")
        try:
            seconds = float(value.rstrip("s"))
        except ValueError:
            raise ValueError(f"{item!r}: not a number of seconds") from None
        if seconds < 0:
            raise ValueError(f"{item!r}: negative")
        found[names[name]] = seconds
    return found


def parseStartups(text: str) -> tuple[int, int, int]:
    """
    Parse OpenSSH's C{MaxStartups} syntax: C{full}, or C{start:rate:full}.

    @raise ValueError: if C{text} is neither.
    """
    try:
        numbers = tuple(int(part) for part in text.split(":"))
    except ValueError:
        raise ValueError(f"{text!r} is not start:rate:full") from None
    if len(numbers) == 1:
        return (numbers[0], 100, numbers[0])
    if len(numbers) != 3:
        raise ValueError(f"{text!r} is not start:rate:full")
    return (numbers[0], numbers[1], numbers[2])


def sourceOf(host: str) -> str:
    """
    @param host: a peer's IP address.
    @return: the source it counts as: the address for IPv4, its /64 for
        IPv6 (an IPv4-mapped IPv6 address counts as the IPv4 one).
    """
    address = _address(host)
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """
    @return: C{host} as an address: without the zone a link-local IPv6
        address may carry (C{fe80::1%eth0}), and an IPv4-mapped IPv6
        address as its IPv4 address.
    """
    address = ipaddress.ip_address(host.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@define(eq=False)
class Admission:
    """
    The state behind the limits: counts of connections and penalties.

    @ivar limits: the limits.
    @ivar now: the clock (seconds).
    @ivar random: a source of floats in [0, 1), for random early drop.
    """

    limits: Limits
    now: Callable[[], float]
    random: Callable[[], float] = random.random
    _unauthenticated: int = field(default=0, init=False)
    _bySource: dict[str, int] = field(factory=dict, init=False)
    _byUser: dict[str, int] = field(factory=dict, init=False)
    _penalties: dict[str, float] = field(factory=dict, init=False)
    _blocked: dict[str, float] = field(factory=dict, init=False)

    @property
    def unauthenticated(self) -> int:
        """
        Connections not logged in yet.
        """
        return self._unauthenticated

    @property
    def sessions(self) -> int:
        """
        Connections logged in now.
        """
        return sum(self._byUser.values())

    def admit(self, host: str) -> str | None:
        """
        A connection from C{host} arrived: count it, unless it is refused.

        @return: why it is refused, or L{None} if it is admitted (then
            L{loggedIn} or L{ended} must follow).
        """
        source = sourceOf(host)
        until = self._blocked.get(source)
        if until is not None and not self._exempt(host):
            if until > self.now():
                return "source penalised for earlier failures"
            del self._blocked[source]
        if self._bySource.get(source, 0) >= self.limits.perSourceStartups:
            return "too many unauthenticated connections from this source"
        start, rate, full = self.limits.startups
        count = self._unauthenticated
        if count >= full:
            return "too many unauthenticated connections"
        if count >= start:
            chance = (rate + (100 - rate) * (count - start) / max(1, full - start)) / 100
            if self.random() < chance:
                return "too many unauthenticated connections (random early drop)"
        self._unauthenticated += 1
        self._bySource[source] = self._bySource.get(source, 0) + 1
        return None

    def loggedIn(self, host: str, user: str) -> str | None:
        """
        An admitted connection from C{host} authenticated as C{user}.

        @return: why it must be refused (too many connections for
            C{user}), or L{None}; either way it no longer counts as
            unauthenticated.
        """
        self._leave(sourceOf(host))
        if self._byUser.get(user, 0) >= self.limits.perUser:
            return f"too many connections for this user (at most {self.limits.perUser})"
        self._byUser[user] = self._byUser.get(user, 0) + 1
        return None

    def loggedOut(self, user: str) -> None:
        """
        A logged-in connection of C{user} ended.
        """
        left = self._byUser.get(user, 0) - 1
        if left > 0:
            self._byUser[user] = left
        else:
            self._byUser.pop(user, None)

    def ended(self, host: str, penalty: str | None) -> None:
        """
        An admitted connection ended without logging in.

        @param penalty: L{AUTH_FAILED}, L{GRACE_EXCEEDED}, L{NO_AUTH}, or
            L{None} for none.
        """
        source = sourceOf(host)
        self._leave(source)
        if penalty is not None:
            self.penalise(host, penalty)

    def penalise(self, host: str, kind: str) -> None:
        """
        Add a penalty of C{kind} to C{host}'s source, unless it is exempt.
        """
        if self._exempt(host):
            return
        seconds = {
            AUTH_FAILED: self.limits.authFailPenalty,
            GRACE_EXCEEDED: self.limits.gracePenalty,
            NO_AUTH: self.limits.noAuthPenalty,
        }[kind]
        if seconds <= 0:
            return
        source = sourceOf(host)
        now = self.now()
        self._expire(now)
        if source not in self._penalties and len(self._penalties) >= MAX_PENALISED:
            return
        until = max(self._penalties.get(source, now), now) + seconds
        until = min(until, now + self.limits.maxPenalty)
        self._penalties[source] = until
        if until - now > self.limits.minPenalty:
            self._blocked[source] = until

    def _leave(self, source: str) -> None:
        self._unauthenticated -= 1
        left = self._bySource.get(source, 0) - 1
        if left > 0:
            self._bySource[source] = left
        else:
            self._bySource.pop(source, None)

    def _exempt(self, host: str) -> bool:
        address = _address(host)
        return any(
            address in ipaddress.ip_network(network, strict=False) for network in self.limits.exempt
        )

    def _expire(self, now: float) -> None:
        """
        Forget penalties that have run out, so that the table stays as
        small as the set of sources recently penalised.
        """
        if len(self._penalties) < 1024:
            return
        for table in (self._penalties, self._blocked):
            for source in [s for s, until in table.items() if until <= now]:
                del table[source]
