"""
A cache of directory listings, so that looking a name up (an SFTP C{stat},
an OPEN's existence check) in a directory listed moments ago needs no S3
request.

A directory is cached only whole: a listing of its first page that had no
continuation.  A name it does not hold is then known not to exist; a
directory whose first L{PAGE} entries did not end the listing is
remembered as too large, so that its lookups go to S3 at once rather than
listing it again.  Entries last L{DirectoryCache.ttl} seconds from the
listing.

What this server itself changes in the store updates the cache at once
(L{twisted_s3sftp.store.cached.CachingStore} reports each change): a file
it stored is entered with its size and ETag; any other change marks the
name as unknown, and the names of the directories above it in the
directories cached, so that their next lookup asks S3.  What other servers
on the bucket change is seen once the listing expires.

Its memory is bounded by L{DirectoryCache.maxEntries} names over all the
directories cached; the least recently used directories are dropped to
stay within it.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable

from attrs import define, field

from .interfaces import ObjectInfo, ObjectListing

#: A directory whose listing goes on after this many entries is too large
#: to cache (S3's own page size).
PAGE = 1000

#: The most changes remembered for listings under way (L{DirectoryCache.listed}):
#: a listing that took longer than this many changes is not cached.
CHANGES_KEPT = 4096

#: What L{DirectoryCache.lookup} answers for a directory.
DIRECTORY = object()

#: What L{DirectoryCache.lookup} answers when it does not hold the
#: directory, or the name changed since: list the directory.
UNLISTED = object()

#: What L{DirectoryCache.lookup} answers for a directory too large to
#: cache: ask S3 about the name itself.
UNKNOWN = object()


@define(eq=False)
class _Listing:
    """
    One directory as cached.

    @ivar listed: when it was listed (the clock's seconds).
    @ivar files: key -> the object at that key.
    @ivar directories: the sub-directories' prefixes, each ending in C{/}.
    @ivar unknown: keys (and sub-directory keys without their C{/}) changed
        since the listing, in ways not known exactly.
    @ivar tooLarge: whether the directory had more than a page: nothing
        of it is cached.
    """

    listed: float
    files: dict[str, ObjectInfo] = field(factory=dict)
    directories: set[str] = field(factory=set)
    unknown: set[str] = field(factory=set)
    tooLarge: bool = False

    @property
    def size(self) -> int:
        """
        How many names it holds, for the bound.
        """
        return len(self.files) + len(self.directories) + len(self.unknown) + 1


def parentOf(key: str) -> str:
    """
    @return: the prefix of the directory holding C{key} (up to and
        including its last C{/}, or C{""}).
    """
    return key[: key.rfind("/") + 1]


@define(eq=False)
class DirectoryCache:
    """
    Listings of directories, by prefix.

    @ivar ttl: seconds a listing is used for; C{0} turns the cache off.
    @ivar seconds: the clock.
    @ivar maxEntries: the most names held, over all directories.
    @ivar entries: names held now.
    """

    ttl: float
    seconds: Callable[[], float]
    maxEntries: int = 50_000
    entries: int = field(default=0, init=False)
    _listings: OrderedDict[str, _Listing] = field(factory=OrderedDict, init=False, repr=False)
    #: (sequence number, key) of the latest changes, for listings that
    #: were under way meanwhile.
    _changes: deque[tuple[int, str]] = field(
        factory=lambda: deque(maxlen=CHANGES_KEPT), init=False, repr=False
    )
    _changed: int = field(default=0, init=False, repr=False)

    def mark(self) -> tuple[int, float]:
        """
        @return: a mark to give L{listed} for a listing about to be asked
            for: the changes made after it are applied to that listing,
            and its age counts from it.
        """
        return self._changed, self.seconds()

    def lookup(self, key: str) -> ObjectInfo | object | None:
        """
        @param key: a full object key (not ending in C{/}).
        @return: the L{ObjectInfo} of the file at C{key} (as a listing
            reports it: no metadata), L{DIRECTORY}, L{None} if nothing is
            there, L{UNLISTED} or L{UNKNOWN}.  A file wins over a directory
            of the same name.
        """
        listing = self._current(parentOf(key))
        if listing is None or key in listing.unknown:
            return UNLISTED
        if listing.tooLarge:
            return UNKNOWN
        self._listings.move_to_end(parentOf(key))
        info = listing.files.get(key)
        if info is not None:
            return info
        if key + "/" in listing.directories:
            return DIRECTORY
        return None

    def listed(self, prefix: str, listing: ObjectListing, mark: tuple[int, float]) -> None:
        """
        Cache the first page of the listing of C{prefix}: the whole
        directory if the page is all of it, else the fact that it is too
        large to cache.

        @param mark: from L{mark}, before the listing was asked for: what
            this server changed meanwhile may be missing from it, and is
            marked unknown.
        """
        self._drop(prefix)
        changed, asked = mark
        since = [key for number, key in self._changes if number > changed]
        if not self.ttl or len(since) < self._changed - changed:
            # (Changes made while it was listed were forgotten.)
            return
        entry = _Listing(asked)
        if listing.token is not None:
            entry.tooLarge = True
        else:
            entry.files = {info.key: info for info in listing.objects}
            entry.directories = set(listing.prefixes)
        if entry.size > self.maxEntries:
            return
        self._listings[prefix] = entry
        self.entries += entry.size
        for key in since:
            self._forget(key, stored=False)
        self._trim()

    def stored(self, info: ObjectInfo) -> None:
        """
        This server stored the file C{info} describes.
        """
        self._record(info.key)
        self._forget(info.key, stored=True)
        listing = self._current(parentOf(info.key))
        if listing is not None and not listing.tooLarge:
            before = listing.size
            listing.unknown.discard(info.key)
            listing.files[info.key] = info
            self.entries += listing.size - before
            self._trim()

    def changed(self, key: str) -> None:
        """
        This server changed what is at C{key} (an object, or a directory
        marker ending in C{/}), or may have: no directory cached above it
        knows any longer what is there.
        """
        key = key.rstrip("/")
        self._record(key)
        self._forget(key, stored=False)
        self._trim()

    def _record(self, key: str) -> None:
        """
        Remember a change, for the listings under way (L{listed}).
        """
        self._changed += 1
        self._changes.append((self._changed, key))

    def _forget(self, key: str, stored: bool) -> None:
        """
        Mark C{key}, and each directory above it, as unknown in the
        directories cached that hold them.

        @param stored: whether a file was stored at C{key}: the directories
            above it then still exist (only their times may have changed,
            which a listing does not report).
        """
        start = 0
        while True:
            cut = key.find("/", start)
            name = key if cut < 0 else key[:cut]
            listing = self._listings.get(key[:start])
            if (
                listing is not None
                and not listing.tooLarge
                and not (stored and name + "/" in listing.directories)
            ):
                before = listing.size
                listing.unknown.add(name)
                listing.files.pop(name, None)
                listing.directories.discard(name + "/")
                self.entries += listing.size - before
            if cut < 0:
                return
            start = cut + 1

    def _current(self, prefix: str) -> _Listing | None:
        """
        @return: the listing of C{prefix}, if it is cached and not expired.
        """
        listing = self._listings.get(prefix)
        if listing is not None and self.seconds() - listing.listed >= self.ttl:
            self._drop(prefix)
            return None
        return listing

    def _drop(self, prefix: str) -> None:
        listing = self._listings.pop(prefix, None)
        if listing is not None:
            self.entries -= listing.size

    def _trim(self) -> None:
        while self.entries > self.maxEntries and self._listings:
            self._drop(next(iter(self._listings)))
