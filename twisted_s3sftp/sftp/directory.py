"""
Directory listings for READDIR, fetched from the store a page at a time.

Conch's own READDIR handling takes fixed batches of 250 entries from a
plain iterator (conch-pitfalls items 8 and 9): it cannot wait for a page
of an S3 listing, and 250 long names make a reply larger than OpenSSH
accepts.  L{DirectoryListing.readBatch} instead returns a Deferred of the
next batch, bounded both in entries and in bytes; the SFTP protocol
(L{twisted_s3sftp.ssh.session.S3FileTransferServer}) calls it.  Only one page of
the listing is held at a time, however large the directory.

Uploads under way into the directory are listed first, with the bytes
received so far; an object of the same name (the file they will replace)
is then left out.

Files are listed with the same time C{stat} reports: the one a client set
(C{x-amz-meta-mtime}) when there is one.  An S3 listing does not carry
metadata, so each batch's files are looked up with HEAD requests,
L{HEAD_CONCURRENCY} at a time.  That costs one request per file listed,
and it is what lets C{rclone sync} and C{lftp mirror} see the times they
set and skip unchanged files instead of sending them again.  A HEAD that
fails leaves that file with the time of the listing (S3's LastModified)
rather than failing the READDIR: the names matter more than the times.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator

from attrs import define, field
from twisted.internet.defer import (
    Deferred,
    DeferredLock,
    DeferredSemaphore,
    gatherResults,
)
from twisted.logger import Logger

from ..errors import EndOfFile, GatewayError
from ..store.interfaces import IObjectStore, ObjectInfo
from .attributes import directoryEntries, longName, modificationTime
from .status import sftpOperation

log = Logger()

#: Entries asked of the store at a time (one S3 page).
PAGE = 1000

#: The most bytes of names in one READDIR reply: a quarter of the 256 KiB
#: message OpenSSH accepts, whatever the names' lengths.
BATCH_BYTES = 64 * 1024

#: The most entries in one READDIR reply.
BATCH_ENTRIES = 500

#: HEAD requests one listing makes at once, for its files' stored times.
HEAD_CONCURRENCY = 16

#: What an entry's attributes and length fields take in a reply, at most,
#: and what its long name adds to its name (a long name is at most 80
#: bytes longer).
_ENTRY_OVERHEAD = 4 + 4 + 4 + 8 + 8 + 4 + 8 + 80

Entry = tuple[bytes, bytes, dict[str, int]]


def encodeEntry(name: str, attrs: dict[str, int], now: float) -> Entry:
    """
    @return: the C{(name, longname, attrs)} triple a NAME reply carries.
    """
    return (name.encode("utf-8"), longName(name, attrs, now).encode("utf-8"), attrs)


@define(eq=False)
class DirectoryListing:
    """
    One open directory.

    @ivar store: where its entries are listed.
    @ivar prefix: its key prefix, ending in C{/} (or the empty home).
    @ivar now: the clock, for sub-directories' times and long names.
    @ivar first: entries listed before the store's (uploads under way).
    @ivar listStore: whether the store's entries are listed at all; for a
        user without the C{list} right, only C{first} (the files of their
        own connection) is.
    """

    store: IObjectStore
    prefix: str
    now: Callable[[], float]
    first: list[tuple[str, dict[str, int]]] = field(factory=list)
    listStore: bool = True
    _pending: deque[tuple[str, dict[str, int], bool]] = field(factory=deque, init=False)
    _hidden: set[str] = field(factory=set, init=False)
    _token: str | None = field(default=None, init=False)
    _done: bool = field(default=False, init=False)
    _lock: DeferredLock = field(factory=DeferredLock, init=False)

    def __attrs_post_init__(self) -> None:
        self._hidden = {name for name, _ in self.first}
        self._pending.extend((name, attrs, False) for name, attrs in self.first)
        self._done = not self.listStore

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
        if not self.listStore:
            return True
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
            batch: list[tuple[str, dict[str, int], bool]] = []
            size = 0
            while self._pending and len(batch) < BATCH_ENTRIES:
                name = self._pending[0][0]
                cost = 2 * len(name.encode("utf-8")) + _ENTRY_OVERHEAD
                if batch and size + cost > BATCH_BYTES:
                    break
                batch.append(self._pending.popleft())
                size += cost
            await self._storedTimes(batch)
            now = self.now()
            return [encodeEntry(name, attrs, now) for name, attrs, _ in batch]
        finally:
            self._lock.release()

    def close(self) -> None:
        """
        Forget what is held.
        """
        self._pending.clear()
        self._done = True

    async def _storedTimes(self, batch: list[tuple[str, dict[str, int], bool]]) -> None:
        """
        Give the files of C{batch} the times their metadata holds.
        """
        semaphore = DeferredSemaphore(HEAD_CONCURRENCY)
        failed: list[str] = []

        async def head(name: str, attrs: dict[str, int]) -> None:
            key = self.prefix + name
            try:
                info = await semaphore.run(self.store.headObject, key)
            except GatewayError as e:
                failed.append(e.message)
                return
            except Exception:
                log.failure("Unexpected error looking up {key}", key=key)
                failed.append("internal error")
                return
            if isinstance(info, ObjectInfo):
                attrs["mtime"] = attrs["atime"] = modificationTime(info)

        await gatherResults(
            [
                Deferred.fromCoroutine(head(name, attrs))
                for name, attrs, isObject in batch
                if isObject
            ]
        )
        if failed:
            log.warn(
                "Listing {prefix}: {count} file(s) shown with S3's time, "
                "their lookup failed: {reason}",
                prefix=self.prefix,
                count=len(failed),
                reason=failed[0],
            )

    async def _fetch(self) -> bool:
        """
        Fetch the next page into L{_pending}.

        @return: whether the page had any key in it.
        """
        listing = await self.store.listDirectory(self.prefix, PAGE, self._token)
        self._token = listing.token
        self._done = listing.token is None
        for name, attrs in directoryEntries(self.prefix, listing, self.now()):
            if name not in self._hidden:
                isObject = not attrs["permissions"] & 0o040000
                self._pending.append((name, attrs, isObject))
        return bool(listing.objects or listing.prefixes)
