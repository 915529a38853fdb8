"""
Directory listings for READDIR, fetched from the store a page at a time.

Conch's own READDIR handling takes fixed batches of 250 entries from a
plain iterator (conch-pitfalls items 8 and 9): it cannot wait for a page
of an S3 listing, and 250 long names make a reply larger than OpenSSH
accepts.  L{DirectoryListing.readBatch} instead returns a Deferred of the
next batch, bounded both in entries and in bytes; the SFTP protocol
(L{twisted_s3sftp.ssh.S3FileTransferServer}) calls it.  Only one page of
the listing is held at a time, however large the directory.

Uploads under way into the directory are listed first, with the bytes
received so far; an object of the same name (the file they will replace)
is then left out.
"""

from __future__ import annotations

from collections import deque
from typing import Callable, Iterator

from attrs import define, field
from twisted.internet.defer import DeferredLock

from .errors import EndOfFile
from .interfaces import IObjectStore
from .listing import directoryEntries, longName
from .operation import sftpOperation

#: Entries asked of the store at a time (one S3 page).
PAGE = 1000

#: The most bytes of names in one READDIR reply: a quarter of the 256 KiB
#: message OpenSSH accepts, whatever the names' lengths.
BATCH_BYTES = 64 * 1024

#: The most entries in one READDIR reply.
BATCH_ENTRIES = 500

#: What an entry's attributes and length fields take in a reply, at most.
_ENTRY_OVERHEAD = 4 + 4 + 4 + 8 + 8 + 4 + 8

Entry = tuple[bytes, bytes, dict[str, int]]


def encodeEntries(
    entries: list[tuple[str, dict[str, int]]], now: float
) -> Iterator[Entry]:
    """
    @param entries: C{(name, attributes)} pairs.
    @param now: the current time, for the long names.
    @return: the C{(name, longname, attrs)} triples a NAME reply carries.
    """
    for name, attrs in entries:
        yield (
            name.encode("utf-8"),
            longName(name, attrs, now).encode("utf-8"),
            attrs,
        )


@define(eq=False)
class DirectoryListing:
    """
    One open directory.

    @ivar store: where its entries are listed.
    @ivar prefix: its key prefix, ending in C{/} (or the empty home).
    @ivar now: the clock, for sub-directories' times and long names.
    @ivar first: entries listed before the store's (uploads under way).
    """

    store: IObjectStore
    prefix: str
    now: Callable[[], float]
    first: list[tuple[str, dict[str, int]]] = field(factory=list)
    _pending: deque[Entry] = field(factory=deque, init=False)
    _hidden: set[str] = field(factory=set, init=False)
    _token: str | None = field(default=None, init=False)
    _done: bool = field(default=False, init=False)
    _lock: DeferredLock = field(factory=DeferredLock, init=False)

    def __attrs_post_init__(self) -> None:
        self._hidden = {name for name, _ in self.first}
        self._pending.extend(encodeEntries(self.first, self.now()))

    def __iter__(self) -> Iterator[Entry]:
        # Conch takes an iterator when the directory is opened; batches
        # come from readBatch instead.
        return iter(())

    async def start(self) -> bool:
        """
        Fetch the first page.

        @return: whether the directory has anything in it, its own marker
            object included: a prefix with nothing under it does not exist.
        """
        found = await self._fetch()
        return found or bool(self.first)

    @sftpOperation("readdir")
    async def readBatch(self) -> list[Entry]:
        """
        @return: the next entries, at most L{BATCH_ENTRIES} of them and
            L{BATCH_BYTES} of names, at least one.
        @raise EndOfFile: when every entry has been returned.
        """
        await self._lock.acquire()
        try:
            while not self._pending and not self._done:
                await self._fetch()
            if not self._pending:
                raise EndOfFile("end of directory")
            batch: list[Entry] = []
            size = 0
            while self._pending and len(batch) < BATCH_ENTRIES:
                name, long, attrs = self._pending[0]
                cost = len(name) + len(long) + _ENTRY_OVERHEAD
                if batch and size + cost > BATCH_BYTES:
                    break
                batch.append(self._pending.popleft())
                size += cost
            return batch
        finally:
            self._lock.release()

    def close(self) -> None:
        """
        Forget what is held.
        """
        self._pending.clear()
        self._done = True

    async def _fetch(self) -> bool:
        """
        Fetch the next page into L{_pending}.

        @return: whether the page had any key in it.
        """
        listing = await self.store.listDirectory(self.prefix, PAGE, self._token)
        self._token = listing.token
        self._done = listing.token is None
        now = self.now()
        entries = [
            entry
            for entry in directoryEntries(self.prefix, listing, now)
            if entry[0] not in self._hidden
        ]
        self._pending.extend(encodeEntries(entries, now))
        return bool(listing.objects or listing.prefixes)
