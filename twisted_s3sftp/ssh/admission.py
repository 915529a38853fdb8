"""
Who may connect: caps on connections that have not logged in, with a
queue for those over the caps, penalties for sources that misbehave, and
caps on each user's connections.

Modelled on OpenSSH's C{MaxStartups}, C{PerSourceMaxStartups} and
C{PerSourcePenalties}, so that a flood from one address cannot lock out
the others, but with one difference: a connection over a cap waits, it
is not refused.  OpenSSH drops it (at random from C{start}), and its
client does not retry, so a partner's batch job starting 50 transfers
from behind one NAT lost most of them.

  - At most L{Limits.perSourceStartups} unauthenticated connections per
    source are served at once, where a source is an IPv4 address or an
    IPv6 /64 (one host's usual allocation); at most L{Limits.maxStartups}
    across all sources.
  - A connection over either cap is queued (L{Waiting}): the server does
    not read from it until a slot frees, and then serves the queued
    connections first come, first served, skipping those whose source is
    still at its cap, so that a flooding address never delays another's.
    Its login grace time runs from accept, so one that never gets a slot
    is dropped at that time.
  - Refused at once are only: a penalised source, and a connection beyond
    the queue's bounds, L{Limits.perSourceQueue} per source and
    L{Limits.maxQueued} in all.  A flooding address thus holds at most
    its cap plus its queue bound of sockets, and no CPU.
  - A connection that ends without logging in earns its source a penalty:
    L{Limits.authFailPenalty} seconds if it failed to
    authenticate (a wrong key and an unknown user are the same here, so
    penalties reveal nothing about which users exist),
    L{Limits.gracePenalty} if it ran out of login time, and
    L{Limits.noAuthPenalty} if it never tried.  Penalties add up
    and run down in real time, capped at L{Limits.maxPenalty};
    once a source has more than L{Limits.minPenalty} outstanding,
    it is refused until its penalty has run out.  Addresses in
    L{Limits.exempt} are never penalised.  A queued connection that was
    never served is not penalised.
  - At most L{Limits.perUser} logged-in connections per user.

L{Limits} also holds the limits the SSH layer enforces per connection
(login grace, authentication attempts, channels, idle time).

Pure core: the clock is given; no reactor.
"""

from __future__ import annotations

import ipaddress
from collections import deque
from collections.abc import Callable

from attrs import define, evolve, field, frozen

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
    @ivar maxStartups: unauthenticated connections served at once, across
        all sources (OpenSSH's C{MaxStartups}, whose C{full} it is).
    @ivar perSourceStartups: unauthenticated connections served at once
        per source (C{PerSourceMaxStartups}).
    @ivar maxQueued: connections waiting for a slot, across all sources.
    @ivar perSourceQueue: connections waiting for a slot, per source.
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

    loginGrace: float = 120.0
    maxAuthTries: int = 6
    maxStartups: int = 100
    perSourceStartups: int = 10
    maxQueued: int = 1024
    perSourceQueue: int = 256
    perUser: int = 1000
    maxChannels: int = 4
    idleTimeout: float = 900.0
    authFailPenalty: float = 5.0
    gracePenalty: float = 10.0
    noAuthPenalty: float = 1.0
    minPenalty: float = 15.0
    maxPenalty: float = 600.0
    exempt: tuple[str, ...] = field(default=(), converter=tuple)

    def __attrs_post_init__(self) -> None:
        for name in ("loginGrace", "idleTimeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        for name in (
            "maxAuthTries",
            "maxStartups",
            "perSourceStartups",
            "perUser",
            "maxChannels",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in ("maxQueued", "perSourceQueue"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        for network in self.exempt:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise ValueError(f"{network!r} is not a network") from None

    def fitted(self, connections: int) -> Limits:
        """
        @param connections: the most connections the server may hold
            open (from its open files limit).
        @return: these limits, with the caps and queue bounds before login
            lowered, if need be, so that starting and queued connections
            take at most half of C{connections} (a quarter each at most),
            leaving the rest for connections logged in.
        """
        if self.maxStartups + self.maxQueued <= connections // 2:
            return self
        startups = min(self.maxStartups, max(1, connections // 4))
        queued = max(0, connections // 2 - startups)
        return evolve(
            self,
            maxStartups=startups,
            perSourceStartups=min(self.perSourceStartups, startups),
            maxQueued=queued,
            perSourceQueue=min(self.perSourceQueue, queued),
        )


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


def parseStartups(text: str) -> int:
    """
    Parse OpenSSH's C{MaxStartups} syntax: C{full}, or C{start:rate:full}.
    Connections over the cap wait rather than being dropped at random, so
    only C{full} matters: it is the cap.

    @return: the cap.
    @raise ValueError: if C{text} is neither.
    """
    try:
        numbers = tuple(int(part) for part in text.split(":"))
    except ValueError:
        raise ValueError(f"{text!r} is not a number or start:rate:full") from None
    if len(numbers) not in (1, 3):
        raise ValueError(f"{text!r} is not a number or start:rate:full")
    if len(numbers) == 3 and not (0 < numbers[0] <= numbers[2] and 0 <= numbers[1] <= 100):
        raise ValueError(f"{text!r}: start:rate:full needs 0 < start <= full, rate a percentage")
    return numbers[-1]


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
class Waiting:
    """
    A connection queued for a slot.

    @ivar source: its source.
    @ivar granted: called once it has a slot (it then counts as an
        unauthenticated connection, as if admitted at once).
    @ivar sequence: its place in arrival order.
    """

    source: str
    granted: Callable[[], None]
    sequence: int
    _admission: Admission = field(repr=False)

    def cancel(self) -> None:
        """
        The connection ended while queued: give up its place.
        """
        self._admission._withdraw(self)


@define(eq=False)
class Admission:
    """
    The state behind the limits: counts of connections, the queue, and
    penalties.

    @ivar limits: the limits.
    @ivar now: the clock (seconds).
    """

    limits: Limits
    now: Callable[[], float]
    _unauthenticated: int = field(default=0, init=False)
    _bySource: dict[str, int] = field(factory=dict, init=False)
    _byUser: dict[str, int] = field(factory=dict, init=False)
    _penalties: dict[str, float] = field(factory=dict, init=False)
    _blocked: dict[str, float] = field(factory=dict, init=False)
    _queues: dict[str, deque[Waiting]] = field(factory=dict, init=False)
    _queued: int = field(default=0, init=False)
    _arrivals: int = field(default=0, init=False)

    @property
    def unauthenticated(self) -> int:
        """
        Connections being served that have not logged in yet.
        """
        return self._unauthenticated

    @property
    def queued(self) -> int:
        """
        Connections waiting for a slot.
        """
        return self._queued

    @property
    def sessions(self) -> int:
        """
        Connections logged in now.
        """
        return sum(self._byUser.values())

    def admit(self, host: str, granted: Callable[[], None] | None = None) -> Waiting | str | None:
        """
        A connection from C{host} arrived: count it, queue it, or refuse it.

        @param granted: called when a queued connection gets its slot; a
            connection that cannot wait (no C{granted}) is refused instead
            of queued.
        @return: L{None} if it is admitted now, a L{Waiting} if it is
            queued, or why it is refused.  Once admitted or granted,
            L{loggedIn} or L{ended} must follow; a queued connection that
            ends must be L{Waiting.cancel}led.
        """
        source = sourceOf(host)
        until = self._blocked.get(source)
        if until is not None and not self._exempt(host):
            if until > self.now():
                return "source penalised for earlier failures"
            del self._blocked[source]
        if self._hasSlot(source):
            self._take(source)
            return None
        queue = self._queues.get(source)
        waiting = 0 if queue is None else len(queue)
        if granted is None:
            return "too many unauthenticated connections"
        if waiting >= self.limits.perSourceQueue:
            return "too many connections waiting from this source"
        if self._queued >= self.limits.maxQueued:
            return "too many connections waiting"
        self._arrivals += 1
        entry = Waiting(source, granted, self._arrivals, self)
        self._queues.setdefault(source, deque()).append(entry)
        self._queued += 1
        return entry

    def _hasSlot(self, source: str) -> bool:
        return (
            self._unauthenticated < self.limits.maxStartups
            and self._bySource.get(source, 0) < self.limits.perSourceStartups
        )

    def _take(self, source: str) -> None:
        self._unauthenticated += 1
        self._bySource[source] = self._bySource.get(source, 0) + 1

    def _withdraw(self, entry: Waiting) -> None:
        queue = self._queues.get(entry.source)
        if queue is None or entry not in queue:
            return
        queue.remove(entry)
        self._queued -= 1
        if not queue:
            del self._queues[entry.source]

    def _serve(self) -> None:
        """
        Give free slots to the connections queued longest whose source has
        room, and tell them.
        """
        granted = []
        while self._queues and self._unauthenticated < self.limits.maxStartups:
            first: Waiting | None = None
            for source, queue in self._queues.items():
                if self._bySource.get(source, 0) < self.limits.perSourceStartups and (
                    first is None or queue[0].sequence < first.sequence
                ):
                    first = queue[0]
            if first is None:
                break
            self._withdraw(first)
            self._take(first.source)
            granted.append(first)
        for entry in granted:
            entry.granted()

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
        self._serve()

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
