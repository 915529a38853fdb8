"""
A cache of directory listings, so that looking a name up (an SFTP C{stat},
an OPEN's existence check) in a directory listed moments ago needs no S3
request.

A directory is cached by the pages of its listing that lookups asked for.
Each page is a range of names known whole: every name between the one
the page started after and the last it holds (or the end of the
directory, if the listing ended there) that the page does not hold does
not exist.  The first lookup in a directory lists it from the start; a
lookup of a name beyond every page cached lists the one page starting at
that name (S3's C{StartAfter}).  A directory of up to L{PAGE} entries is
so one listing.  In a larger one, the pages at a name start at L{RUN}
names and double, up to L{PAGE}, while the names looked up beyond them
go up (a batch going through the directory in order); a lookup that goes
back starts again at L{RUN}, so that names looked up at random cost a
short listing each (botocore takes about 25 microseconds of CPU per entry
listed, measured).  A batch uploading new names in order past the directory's last
name needs one such listing in all (its page runs to the end).  Entries
last L{DirectoryCache.ttl} seconds from a directory's first page.

What this server itself changes in the store updates the cache at once
(L{twisted_s3sftp.store.cached.CachingStore} reports each change): a file
it stored or copied is entered whole, with its size, ETag, metadata and
settings (L{DirectoryCache.whole}: what a HEAD would report, its time
aside); any other change marks the name as unknown, and the names of the directories above it in the
directories cached, so that their next lookup asks S3 (a listing of the
page at that name).  What other servers on the bucket change is seen
once the listing expires.

Its memory is bounded by L{DirectoryCache.maxEntries} names over all the
directories cached; the least recently used directories are dropped to
stay within it, and a directory that alone would exceed it keeps only its
latest page.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections import OrderedDict, deque
from collections.abc import Callable

from attrs import define, field

from .interfaces import ObjectInfo, ObjectListing

#: The entries a lookup's listing asks for (S3's own page size).
PAGE = 1000

#: The entries the first listing at a name asks for (L{DirectoryCache.pageFor}).
RUN = 16

#: The most changes remembered for listings under way (L{DirectoryCache.listed}):
#: a listing that took longer than this many changes is not cached.
CHANGES_KEPT = 4096

#: What L{DirectoryCache.lookup} answers for a directory.
DIRECTORY = object()

#: What L{DirectoryCache.lookup} answers when it does not hold the
#: directory: list it from the start.
UNLISTED = object()

#: What L{DirectoryCache.lookup} answers when it holds the directory but
#: not the name (beyond every page cached, or changed since): list the
#: page starting at the name (L{startAfter}).
OUTSIDE = object()

#: What a caller answers when the cache cannot (no cache, or a lookup
#: its listing did not settle): ask S3 about the name itself.
UNKNOWN = object()


def startAfter(key: str) -> str:
    """
    @param key: a full object key (not ending in C{/}).
    @return: where the listing of the page holding C{key} starts: after
        C{key} less its last character, so that C{key} (and a directory of
        that name) is among the page's first entries if it exists; only
        names that extend that shorter key with a character sorting before
        C{key}'s last come before it.
    """
    return key[:-1]


#: The most pages cached of one directory: a directory looked up at more
#: places than this starts again from its latest page.
MAX_PAGES = 64


@define(frozen=True)
class _Page:
    """
    What one page of a listing tells.

    S3 orders a listing by key, a sub-directory at the place of its first
    key (C{name/...}), so that C{name.txt} comes before C{name/}; SeaweedFS
    orders a sub-directory by its name alone, before C{name.txt}.  A name is
    known absent only where both orders put it inside the page.

    @ivar after: the page holds names greater than this (the directory's
        prefix for its first page).
    @ivar last: unless L{None} (the listing ended), its greatest name,
        with a sub-directory's prefix taken without its C{/}.
    @ivar lastEntry: unless L{None}, its greatest entry as S3 orders them
        (a sub-directory's prefix with its C{/}).
    """

    after: str
    last: str | None
    lastEntry: str | None

    def holdsFile(self, key: str) -> bool:
        """
        @return: whether the page holds the file at C{key} if there is one.
        """
        return self.after < key and (self.last is None or key <= self.last)

    def holdsDirectory(self, key: str) -> bool:
        """
        @return: whether the page holds the sub-directory C{key + "/"} if
            there is one.
        """
        return self.holdsFile(key) and (self.lastEntry is None or key + "/" <= self.lastEntry)


@define(eq=False)
class _Listing:
    """
    One directory as cached.

    @ivar listed: when its first page cached was listed (the clock's
        seconds).
    @ivar pages: the pages listed.
    @ivar files: key -> the object at that key.
    @ivar order: the keys of C{files}, sorted.
    @ivar directories: the sub-directories' prefixes, each ending in C{/}.
    @ivar unknown: keys (and sub-directory keys without their C{/}) changed
        since the listing, in ways not known exactly.
    @ivar whole: keys of C{files} entered as this server wrote them, their
        metadata and settings included (L{DirectoryCache.whole}).
    @ivar marker: the directory's marker object (its prefix as a key), if
        it has one and C{markerKnown}.
    @ivar markerKnown: whether a first page since the marker last changed
        told whether there is one.
    @ivar lastMiss: the last name a page was listed at (L{DirectoryCache.pageFor}).
    @ivar run: the size of that page.
    """

    listed: float
    pages: list[_Page] = field(factory=list)
    files: dict[str, ObjectInfo] = field(factory=dict)
    order: list[str] = field(factory=list)
    directories: set[str] = field(factory=set)
    unknown: set[str] = field(factory=set)
    whole: set[str] = field(factory=set)
    marker: ObjectInfo | None = None
    markerKnown: bool = False
    lastMiss: str | None = None
    run: int = RUN

    @property
    def size(self) -> int:
        """
        How many names (and pages) it holds, for the bound: a file entered
        whole (with its metadata) counts twice.
        """
        return (
            len(self.files)
            + len(self.whole)
            + len(self.directories)
            + len(self.unknown)
            + len(self.pages)
            + 1
        )

    def holdsFile(self, key: str) -> bool:
        """
        @return: whether a page cached holds the file at C{key} if there
            is one.
        """
        return any(page.holdsFile(key) for page in self.pages)

    def holdsDirectory(self, key: str) -> bool:
        """
        @return: whether a page cached holds the sub-directory C{key + "/"}
            if there is one.
        """
        return any(page.holdsDirectory(key) for page in self.pages)

    def putFile(self, info: ObjectInfo, whole: bool = False) -> None:
        """
        Enter the file C{info} describes.

        @param whole: whether C{info} is all a HEAD would tell of it.
        """
        if info.key not in self.files:
            insort(self.order, info.key)
        self.files[info.key] = info
        if whole:
            self.whole.add(info.key)
        else:
            self.whole.discard(info.key)

    def dropFile(self, key: str) -> None:
        """
        Forget the file at C{key}, if it is entered.
        """
        if self.files.pop(key, None) is not None:
            del self.order[bisect_left(self.order, key)]
            self.whole.discard(key)

    def add(self, after: str, listing: ObjectListing) -> None:
        """
        Put a page in, in place of what was known of the names it holds.

        @param after: where it started (the directory's prefix for the
            first page).
        """
        if listing.token is None:
            page = _Page(after, None, None)
        else:
            names = [info.key for info in listing.objects]
            page = _Page(
                after,
                max([*names, *(prefix[:-1] for prefix in listing.prefixes)], default=after),
                max([*names, *listing.prefixes], default=after),
            )
        low = bisect_right(self.order, after)
        high = len(self.order) if page.last is None else bisect_right(self.order, page.last)
        for key in self.order[low:high]:
            del self.files[key]
            self.whole.discard(key)
        del self.order[low:high]
        self.directories = {
            prefix for prefix in self.directories if not page.holdsDirectory(prefix[:-1])
        }
        self.unknown = {key for key in self.unknown if not page.holdsDirectory(key)}
        for info in listing.objects:
            self.putFile(info)
        self.directories.update(listing.prefixes)
        self.pages.append(page)


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
    @ivar absentKnown: whether a name a current listing lacks may be
        called absent: not in a worker of C{--workers}, whose fellow
        workers store files through caches of their own.
    @ivar entries: names held now.
    """

    ttl: float
    seconds: Callable[[], float]
    maxEntries: int = 50_000
    absentKnown: bool = True
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
            there, L{UNLISTED} or L{OUTSIDE}.  A file wins over a directory
            of the same name.
        """
        listing = self._current(parentOf(key))
        if listing is None:
            return UNLISTED
        if key in listing.unknown:
            return OUTSIDE
        self._listings.move_to_end(parentOf(key))
        info = listing.files.get(key)
        if info is not None:
            return info
        if not listing.holdsFile(key):
            return OUTSIDE
        if key + "/" in listing.directories:
            return DIRECTORY
        if not listing.holdsDirectory(key):
            return OUTSIDE
        return None

    def pageFor(self, key: str) -> int:
        """
        @param key: a name L{lookup} answered L{OUTSIDE} for.
        @return: the entries to list at it: twice the last such listing's
            in its directory if C{key} is beyond that listing's name (up
            to L{PAGE}), else L{RUN}.
        """
        listing = self._listings.get(parentOf(key))
        if listing is None:
            return RUN
        if listing.lastMiss is not None and key > listing.lastMiss:
            listing.run = min(PAGE, listing.run * 2)
        else:
            listing.run = RUN
        listing.lastMiss = key
        return listing.run

    def listed(
        self,
        prefix: str,
        listing: ObjectListing,
        mark: tuple[int, float],
        after: str | None = None,
    ) -> None:
        """
        Cache a page of the listing of C{prefix}.

        @param mark: from L{mark}, before the listing was asked for: what
            this server changed meanwhile may be missing from it, and is
            marked unknown.
        @param after: what the listing started after (L{startAfter}), or
            L{None} for its first page, which replaces whatever was cached
            of the directory.
        """
        changed, asked = mark
        current = None if after is None else self._current(prefix)
        self._drop(prefix)
        since = [key for number, key in self._changes if number > changed]
        if (
            not self.ttl
            or len(since) < self._changed - changed
            or (current is not None and asked < current.listed)
        ):
            # Changes made while it was listed were forgotten, or the
            # directory was listed anew since this page was asked for.
            if current is not None:
                self._keep(prefix, current)
            return
        start = prefix if after is None else after
        entry = current if current is not None else _Listing(asked)
        entry.add(start, listing)
        if current is not None and (entry.size > self.maxEntries or len(entry.pages) > MAX_PAGES):
            entry = _Listing(asked, lastMiss=current.lastMiss, run=current.run)
            entry.add(start, listing)
        if entry.size > self.maxEntries:
            return
        if after is None:
            # A first page starts with the marker, if there is one.
            entry.markerKnown = prefix.rstrip("/") not in since
            found = listing.objects[0] if listing.objects else None
            entry.marker = found if found is not None and found.key == prefix else None
        self._keep(prefix, entry)
        for key in since:
            self._forget(key, stored=False)
        self._trim()

    def whole(self, key: str) -> ObjectInfo | None:
        """
        @param key: a full object key.
        @return: the file at C{key} as this server last wrote it (a PUT or
            a copy), metadata and settings included, as a HEAD would
            report it then; L{None} if the cache does not hold that.
        """
        listing = self._current(parentOf(key))
        if listing is None or key not in listing.whole or key in listing.unknown:
            return None
        self._listings.move_to_end(parentOf(key))
        return listing.files.get(key)

    def marker(self, prefix: str) -> ObjectInfo | object | None:
        """
        @param prefix: a directory's prefix (ending in C{/}).
        @return: the directory's marker object (for its time), L{None} if
            it has none, or L{UNLISTED} if the cache cannot say.
        """
        listing = self._current(prefix)
        if listing is None or not listing.markerKnown:
            return UNLISTED
        self._listings.move_to_end(prefix)
        return listing.marker

    def stored(self, info: ObjectInfo, whole: bool = False) -> None:
        """
        This server stored the file C{info} describes.

        @param whole: whether C{info} holds the file's metadata and
            settings as written, for L{whole}.
        """
        self._record(info.key)
        self._forget(info.key, stored=True)
        listing = self._current(parentOf(info.key))
        if listing is not None:
            before = listing.size
            listing.unknown.discard(info.key)
            listing.putFile(info, whole)
            self.entries += listing.size - before
            self._trim()

    def changed(self, key: str) -> None:
        """
        This server changed what is at C{key} (an object, or a directory
        marker ending in C{/}), or may have: no directory cached above it
        knows any longer what is there.
        """
        directory = self._listings.get(key)
        if directory is not None:
            directory.markerKnown = False
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
            if listing is not None and not (stored and name + "/" in listing.directories):
                before = listing.size
                listing.unknown.add(name)
                listing.dropFile(name)
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

    def _keep(self, prefix: str, listing: _Listing) -> None:
        self._listings[prefix] = listing
        self.entries += listing.size

    def _drop(self, prefix: str) -> None:
        listing = self._listings.pop(prefix, None)
        if listing is not None:
            self.entries -= listing.size

    def _trim(self) -> None:
        while self.entries > self.maxEntries and self._listings:
            self._drop(next(iter(self._listings)))
