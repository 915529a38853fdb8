"""
Sans-I/O flow control: how many bytes the server holds in memory, per SSH
channel and in total, and when the client may send more.

Conch grants SSH window as soon as data arrives, so a client that sends
faster than S3 accepts would fill the server's memory (conch-pitfalls
item 5).  Here the window is credited back only once bytes have left
memory:

  - L{ChannelWindow} keeps the books of one channel: the window the
    client holds, the bytes received but not yet credited back, and the
    window the channel should have (its I{target}).  Bytes of protocol
    messages are credited as soon as they are handled; the data of a
    WRITE is credited when its upload sends it to S3 or drops it.
  - L{MemoryLimit} is the server-wide bound.  Each upload reserves its
    share when it opens and returns it when it ends; the reservation is
    added to its channel's target.  A request that does not fit waits in
    line (first come, first served) rather than failing at once.

An upload needs at least one part plus L{SLACK} to make progress (the
planner holds a full part until one more byte arrives); with that much
reserved, every open upload can always finish a part, so waiting for
memory cannot deadlock.

Pure core: no Twisted, no boto3.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from attrs import define, field

from ..store.parts import BufferPool

MiB = 1024 * 1024

#: Room beyond an upload's parts: the write that completes a part, the
#: SFTP framing of the writes in the window, a message being parsed.
SLACK = 1 * MiB

#: The window of an SFTP channel with no upload open: room for a few
#: of the largest SFTP messages (256 KiB).
BASE_WINDOW = 1 * MiB

#: The most window a client is given at once, however much memory its
#: upload reserved.  OpenSSH's client buffers in user space whatever the
#: window lets it send and the socket does not take yet; with windows of
#: tens of MiB its buffer copies and page faults took most of a 2-core
#: machine once 24 uploads ran at once (33 MB/s in all, against 62 with
#: this cap, and 120 MB/s for one upload either way).  8 MiB still
#: carries 80 MB/s over a 100 ms round trip.
MAX_WINDOW = 8 * MiB


def uploadReservation(partSize: int, concurrency: int, bufferLimit: int) -> tuple[int, int]:
    """
    How much memory an upload asks for.

    @param partSize: the size of the part it is filling.
    @param concurrency: how many parts it may have in flight to S3.
    @param bufferLimit: the most one upload should hold.
    @return: C{(minimum, wanted)}: the least it can make progress with
        (one part, in series) and what lets C{concurrency} parts fly while
        the next one fills, capped by C{bufferLimit} but never below the
        minimum.
    """
    minimum = partSize + SLACK
    wanted = min(bufferLimit, (concurrency + 1) * partSize + SLACK)
    return minimum, max(minimum, wanted)


@define(eq=False)
class MemoryLimit:
    """
    The memory all uploads together may hold.

    @ivar limit: the bound, in bytes.
    @ivar buffers: the part buffers uploads reuse; the idle ones are kept
        beyond L{limit}, up to their own bound.
    @ivar used: bytes reserved now.
    """

    limit: int
    buffers: BufferPool = field(factory=BufferPool)
    used: int = field(default=0, init=False)
    _waiting: deque[tuple[int, Callable[[], None]]] = field(factory=deque, init=False, repr=False)

    @property
    def available(self) -> int:
        """
        @return: bytes not reserved, or 0 while requests wait in line.
        """
        return 0 if self._waiting else max(0, self.limit - self.used)

    def tryReserve(self, amount: int) -> bool:
        """
        Reserve C{amount} now if it fits and nobody is waiting.

        @return: whether it was reserved.
        """
        if amount > self.available:
            return False
        self.used += amount
        return True

    def reserveLater(self, amount: int, granted: Callable[[], None]) -> Callable[[], None]:
        """
        Reserve C{amount} as soon as it fits, after earlier requests.

        @param granted: called once it is reserved.
        @return: a function that withdraws the request if it is still
            waiting.
        """
        entry = (amount, granted)
        self._waiting.append(entry)
        self._wake()

        def withdraw() -> None:
            if entry in self._waiting:
                self._waiting.remove(entry)
                self._wake()

        return withdraw

    def free(self, amount: int) -> None:
        """
        Return C{amount} reserved earlier.
        """
        self.used -= amount
        assert self.used >= 0, "freed more memory than was reserved"
        self._wake()

    def _wake(self) -> None:
        while self._waiting and self.used + self._waiting[0][0] <= self.limit:
            amount, granted = self._waiting.popleft()
            self.used += amount
            granted()


@define(eq=False)
class ChannelWindow:
    """
    The SSH window bookkeeping of one channel.

    The invariant kept is C{held + window <= target} (it may be exceeded
    after the target shrinks, until enough is credited back): the client
    can never make the channel hold more than its target.

    @ivar target: the window the channel should have.
    @ivar maximum: the most window the client is ever given at once
        (L{MAX_WINDOW}), whatever the target.
    @ivar onGrant: called with the window to grant the client (to send an
        SSH C{WINDOW_ADJUST}).
    @ivar window: bytes the client may still send (Conch's
        C{localWindowLeft}).
    @ivar held: bytes received and not yet credited back.
    """

    target: int
    onGrant: Callable[[int], None] = field(default=lambda amount: None, repr=False)
    maximum: int = MAX_WINDOW
    window: int = field(init=False)
    held: int = field(default=0, init=False)

    @window.default
    def _initialWindow(self) -> int:
        return self.target

    def receive(self, amount: int) -> bool:
        """
        The client sent C{amount} bytes.

        @return: C{False} if that exceeds the window it was given (a
            protocol violation); nothing is counted then.
        """
        if amount > self.window:
            return False
        self.window -= amount
        self.held += amount
        return True

    def credit(self, amount: int) -> int:
        """
        C{amount} bytes received earlier have left memory.

        @return: the window granted to the client now (possibly 0).
        """
        self.held -= amount
        assert self.held >= 0, "credited more than was received"
        return self._grant()

    def resize(self, change: int) -> int:
        """
        Change the target by C{change} bytes.

        @return: the window granted to the client now (possibly 0).
        """
        self.target += change
        return self._grant()

    def _grant(self) -> int:
        room = min(self.target - self.held, self.maximum) - self.window
        if room <= 0:
            return 0
        # Batch small credits into one WINDOW_ADJUST unless the client is
        # running short (of the window it can be given: the cap counts).
        size = min(self.target, self.maximum)
        if room < size // 8 and self.window > size // 2:
            return 0
        self.window += room
        self.onGrant(room)
        return room


class FreeWindow:
    """
    The window of writes that do not arrive over an SSH channel (tests,
    local tools): nothing is metered and credits go nowhere.
    """

    def receive(self, amount: int) -> bool:
        """
        @return: C{True}: any amount may arrive.
        """
        return True

    def credit(self, amount: int) -> int:
        """
        @return: 0: there is no client to grant window to.
        """
        return 0

    def resize(self, change: int) -> int:
        """
        @return: 0: there is no client to grant window to.
        """
        return 0
