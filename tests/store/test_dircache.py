"""
Tests for L{twisted_s3sftp.store.dircache} and
L{twisted_s3sftp.store.cached}: what a cached listing answers, how this
server's own changes update it, its expiry and its memory bound.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from twisted_s3sftp.store.cached import CachingStore
from twisted_s3sftp.store.dircache import (
    CHANGES_KEPT,
    DIRECTORY,
    MAX_PAGES,
    OUTSIDE,
    PAGE,
    RUN,
    UNLISTED,
    DirectoryCache,
    parentOf,
    startAfter,
)
from twisted_s3sftp.store.interfaces import (
    IObjectStore,
    ObjectInfo,
    ObjectListing,
    ObjectSettings,
)
from twisted_s3sftp.store.memory import MemoryObjectStore


def info(key: str, size: int = 1) -> ObjectInfo:
    """
    @return: a listing's entry for C{key}.
    """
    return ObjectInfo(key, size, 0, '"e"')


def cacheOf(clock: Clock, maxEntries: int = 1000, ttl: float = 5.0) -> DirectoryCache:
    """
    @return: a cache of listings lasting C{ttl} seconds on C{clock}.
    """
    return DirectoryCache(ttl, clock.seconds, maxEntries)


class LookupTests(SynchronousTestCase):
    """
    A directory listed whole answers for every name in it until the
    listing expires.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.cache = cacheOf(self.clock)
        listing = ObjectListing([info("u/d/a"), info("u/d/b", 7)], ["u/d/b/", "u/d/sub/"])
        self.cache.listed("u/d/", listing, self.cache.mark())

    def test_names(self) -> None:
        """
        A file is answered with its entry, a sub-directory with
        L{DIRECTORY}, a name the listing does not hold with L{None}; a
        file wins over a directory of the same name.
        """
        self.assertEqual(self.cache.lookup("u/d/a"), info("u/d/a"))
        self.assertEqual(self.cache.lookup("u/d/b"), info("u/d/b", 7))
        self.assertIs(self.cache.lookup("u/d/sub"), DIRECTORY)
        self.assertIsNone(self.cache.lookup("u/d/missing"))

    def test_otherDirectories(self) -> None:
        """
        Names in a directory not listed are L{UNLISTED}.
        """
        self.assertIs(self.cache.lookup("u/other/a"), UNLISTED)
        self.assertIs(self.cache.lookup("u/d/sub/a"), UNLISTED)

    def test_expires(self) -> None:
        """
        From C{ttl} seconds after the listing, nothing of it is answered,
        and its names no longer count against the bound.
        """
        self.clock.advance(4.9)
        self.assertIsNone(self.cache.lookup("u/d/missing"))
        self.clock.advance(0.1)
        self.assertIs(self.cache.lookup("u/d/missing"), UNLISTED)
        self.assertEqual(self.cache.entries, 0)

    def test_firstPage(self) -> None:
        """
        A first page that is not all of its directory answers for the
        names up to its last; a name beyond it is L{OUTSIDE} (list the
        page at it), not L{UNLISTED} (list the directory again).
        """
        page = ObjectListing([info("u/big/a"), info("u/big/c")], ["u/big/d/"], token="t")
        self.cache.listed("u/big/", page, self.cache.mark())
        self.assertEqual(self.cache.lookup("u/big/a"), info("u/big/a"))
        self.assertIsNone(self.cache.lookup("u/big/b"))
        self.assertIs(self.cache.lookup("u/big/d"), DIRECTORY)
        self.assertIs(self.cache.lookup("u/big/da"), OUTSIDE)
        self.assertIs(self.cache.lookup("u/big/zz"), OUTSIDE)

    def test_off(self) -> None:
        """
        With a TTL of 0, nothing is cached.
        """
        cache = cacheOf(self.clock, ttl=0)
        cache.listed("u/d/", ObjectListing([info("u/d/a")]), cache.mark())
        self.assertIs(cache.lookup("u/d/a"), UNLISTED)

    def test_parentOf(self) -> None:
        """
        A key's directory is everything up to its last C{/}.
        """
        self.assertEqual(parentOf("u/d/a"), "u/d/")
        self.assertEqual(parentOf("top"), "")


class ChangeTests(SynchronousTestCase):
    """
    What this server changes is answered at once: a file it stored with
    its entry, anything else by listing again.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.cache = cacheOf(self.clock)
        self.cache.listed("", ObjectListing(prefixes=["u/"]), self.cache.mark())
        self.cache.listed("u/", ObjectListing([info("u/f")], ["u/d/"]), self.cache.mark())
        self.cache.listed("u/d/", ObjectListing([info("u/d/a")]), self.cache.mark())

    def test_stored(self) -> None:
        """
        A file stored is answered with its entry; the directories above it
        stay directories.
        """
        self.cache.stored(info("u/d/new", 5))
        self.assertEqual(self.cache.lookup("u/d/new"), info("u/d/new", 5))
        self.assertIs(self.cache.lookup("u/d"), DIRECTORY)
        self.assertIs(self.cache.lookup("u"), DIRECTORY)

    def test_storedDeeper(self) -> None:
        """
        A file stored under a name the cache held as nothing (a new
        sub-directory) makes that name unknown in its directory.
        """
        self.assertIsNone(self.cache.lookup("u/d/e"))
        self.cache.stored(info("u/d/e/f/g"))
        self.assertIs(self.cache.lookup("u/d/e"), OUTSIDE)
        self.assertEqual(self.cache.lookup("u/d/a"), info("u/d/a"))

    def test_changed(self) -> None:
        """
        A name changed (deleted, copied onto, completed from parts) is
        L{OUTSIDE} (list the page at it), and so is every directory above
        it, which a deletion may have emptied.
        """
        self.cache.changed("u/d/a")
        self.assertIs(self.cache.lookup("u/d/a"), OUTSIDE)
        self.assertIs(self.cache.lookup("u/d"), OUTSIDE)
        self.assertIs(self.cache.lookup("u"), OUTSIDE)
        self.assertEqual(self.cache.lookup("u/f"), info("u/f"))

    def test_directoryMarker(self) -> None:
        """
        A directory marker changed (C{mkdir}, C{rmdir}) makes the
        directory's name unknown in its parent.
        """
        self.cache.changed("u/new/")
        self.assertIs(self.cache.lookup("u/new"), OUTSIDE)
        self.assertEqual(self.cache.lookup("u/f"), info("u/f"))

    def test_relisted(self) -> None:
        """
        Listing a directory again replaces what was unknown in it.
        """
        self.cache.changed("u/d/a")
        self.cache.listed("u/d/", ObjectListing([info("u/d/b")]), self.cache.mark())
        self.assertIsNone(self.cache.lookup("u/d/a"))
        self.assertEqual(self.cache.lookup("u/d/b"), info("u/d/b"))

    def test_changedWhileListing(self) -> None:
        """
        What this server changed while a listing was under way (which the
        listing may or may not show) is unknown in it, not taken from it.
        """
        mark = self.cache.mark()
        self.cache.stored(info("u/d/late"))
        self.cache.listed("u/d/", ObjectListing([info("u/d/a")]), mark)
        self.assertIs(self.cache.lookup("u/d/late"), OUTSIDE)
        self.assertEqual(self.cache.lookup("u/d/a"), info("u/d/a"))

    def test_manyChangesWhileListing(self) -> None:
        """
        A listing under way for more changes than the cache remembers is
        not cached.
        """
        mark = self.cache.mark()
        for n in range(CHANGES_KEPT + 1):
            self.cache.changed(f"elsewhere/{n}")
        self.cache.listed("u/d/", ObjectListing([info("u/d/a")]), mark)
        self.assertIs(self.cache.lookup("u/d/a"), UNLISTED)


class PageTests(SynchronousTestCase):
    """
    A directory larger than a page is cached by the pages listed at the
    names looked up in it.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.cache = cacheOf(self.clock)
        first = ObjectListing([info("u/a0"), info("u/a1")], token="t")
        self.cache.listed("u/", first, self.cache.mark())

    def test_startAfter(self) -> None:
        """
        The page at a name starts after the name less its last character,
        so that the name itself is in it.
        """
        self.assertEqual(startAfter("u/m5"), "u/m")
        self.assertEqual(startAfter("u/m"), "u/")
        self.assertEqual(startAfter("m"), "")

    def test_pageAtName(self) -> None:
        """
        A page listed at a name answers for the names after where it
        started up to its last, beside the pages cached before; one that
        ends the listing answers for every name after where it started.
        """
        self.assertIs(self.cache.lookup("u/m5"), OUTSIDE)
        page = ObjectListing([info("u/m5"), info("u/m7")], ["u/m8/"], token="t")
        self.cache.listed("u/", page, self.cache.mark(), startAfter("u/m5"))
        self.assertEqual(self.cache.lookup("u/m5"), info("u/m5"))
        self.assertIsNone(self.cache.lookup("u/m6"))
        self.assertIs(self.cache.lookup("u/m8"), DIRECTORY)
        self.assertIs(self.cache.lookup("u/m9"), OUTSIDE)
        self.assertIs(self.cache.lookup("u/b"), OUTSIDE)
        self.assertEqual(self.cache.lookup("u/a1"), info("u/a1"))
        self.cache.listed("u/", ObjectListing([info("u/x")]), self.cache.mark(), "u/w")
        self.assertEqual(self.cache.lookup("u/x"), info("u/x"))
        self.assertIsNone(self.cache.lookup("u/zzz"))
        self.assertIs(self.cache.lookup("u/w"), OUTSIDE)

    def test_directoryAfterSibling(self) -> None:
        """
        S3 lists a sub-directory C{foo/} at the place of its first key, after
        C{foo.txt}: a page ending at C{foo.txt} does not say that C{foo/}
        is absent (list at it), though it does for C{foo} as a file and for
        a directory C{fo/}.
        """
        page = ObjectListing([info("u/a"), info("u/foo.txt")], token="t")
        self.cache.listed("u/", page, self.cache.mark(), "u/")
        self.assertIs(self.cache.lookup("u/foo"), OUTSIDE)
        self.assertIsNone(self.cache.lookup("u/fo"))
        self.assertEqual(self.cache.lookup("u/foo.txt"), info("u/foo.txt"))

    def test_directoryFirst(self) -> None:
        """
        SeaweedFS lists a sub-directory by its name, before C{foo.txt}: a
        page ending at the directory C{foo/} says nothing of C{foo.txt}.
        """
        page = ObjectListing([info("u/a")], ["u/foo/"], token="t")
        self.cache.listed("u/", page, self.cache.mark(), "u/")
        self.assertIs(self.cache.lookup("u/foo"), DIRECTORY)
        self.assertIs(self.cache.lookup("u/foo.txt"), OUTSIDE)
        self.assertIsNone(self.cache.lookup("u/b"))

    def test_olderPageIgnored(self) -> None:
        """
        A page asked for before the directory was listed anew (its answer
        came last) is not merged: it may be older than what is cached.
        """
        mark = self.cache.mark()
        self.clock.advance(1)
        newer = ObjectListing([info("u/a0"), info("u/x", 2)])
        self.cache.listed("u/", newer, self.cache.mark())
        self.cache.listed("u/", ObjectListing([info("u/x", 1)]), mark, "u/")
        self.assertEqual(self.cache.lookup("u/x"), info("u/x", 2))

    def test_pagesCounted(self) -> None:
        """
        A directory looked up at more than L{MAX_PAGES} places starts again
        from its latest page.
        """
        for n in range(MAX_PAGES + 1):
            page = ObjectListing([info(f"u/p{n:03d}")], token="t")
            self.cache.listed("u/", page, self.cache.mark(), f"u/p{n:03d}"[:-1])
        self.assertEqual(self.cache.lookup(f"u/p{MAX_PAGES:03d}"), info(f"u/p{MAX_PAGES:03d}"))
        self.assertIs(self.cache.lookup("u/p000"), OUTSIDE)
        self.assertIs(self.cache.lookup("u/a0"), OUTSIDE)

    def test_wholeReplaced(self) -> None:
        """
        A file entered whole is no longer whole once a page lists it again
        (a listing has no metadata) or it changes.
        """
        self.cache.stored(ObjectInfo("u/m5", 1, 0, "e", {"mtime": "1"}), whole=True)
        self.assertEqual(self.cache.whole("u/m5").metadata, {"mtime": "1"})  # type: ignore[union-attr]
        self.cache.listed("u/", ObjectListing([info("u/m5")]), self.cache.mark(), "u/m")
        self.assertIsNone(self.cache.whole("u/m5"))
        self.cache.stored(ObjectInfo("u/m6", 1, 0, "e", {"mtime": "1"}), whole=True)
        self.cache.changed("u/m6")
        self.assertIsNone(self.cache.whole("u/m6"))
        self.cache.stored(info("u/m7"))
        self.assertIsNone(self.cache.whole("u/m7"))

    def test_marker(self) -> None:
        """
        A directory's first page tells its marker (for its time), or that
        it has none; a page at a name does not, nor a first page listed
        while the marker changed; a change to the marker forgets it.
        """
        self.assertIsNone(self.cache.marker("u/"))
        self.cache.listed("v/", ObjectListing([info("v/m5")]), self.cache.mark(), "v/m")
        self.assertIs(self.cache.marker("v/"), UNLISTED)
        listing = ObjectListing([info("u/d/"), info("u/d/a")])
        self.cache.listed("u/d/", listing, self.cache.mark())
        self.assertEqual(self.cache.marker("u/d/"), info("u/d/"))
        self.cache.changed("u/d/")
        self.assertIs(self.cache.marker("u/d/"), UNLISTED)
        self.cache.listed("u/e/", ObjectListing([info("u/e/a")]), self.cache.mark())
        self.assertIsNone(self.cache.marker("u/e/"))
        mark = self.cache.mark()
        self.cache.changed("u/f/")
        self.cache.listed("u/f/", ObjectListing([info("u/f/a")]), mark)
        self.assertIs(self.cache.marker("u/f/"), UNLISTED)

    def test_pageReplaces(self) -> None:
        """
        A page replaces what was cached in its range: a file another server
        removed is gone, an unknown name is known again, what lies outside
        it is kept.
        """
        self.cache.changed("u/a1")
        self.assertIs(self.cache.lookup("u/a1"), OUTSIDE)
        page = ObjectListing([info("u/a1", 9)])
        self.cache.listed("u/", page, self.cache.mark(), "u/a0")
        self.assertEqual(self.cache.lookup("u/a1"), info("u/a1", 9))
        self.assertEqual(self.cache.lookup("u/a0"), info("u/a0"))
        self.cache.listed("u/", ObjectListing(), self.cache.mark(), "u/")
        self.assertIsNone(self.cache.lookup("u/a0"))

    def test_pageChangedWhileListing(self) -> None:
        """
        What this server changed while a page was listed is unknown in it.
        """
        mark = self.cache.mark()
        self.cache.changed("u/m5")
        self.cache.listed("u/", ObjectListing([info("u/m5")]), mark, startAfter("u/m5"))
        self.assertIs(self.cache.lookup("u/m5"), OUTSIDE)
        self.assertIsNone(self.cache.lookup("u/m6"))

    def test_expiresWithFirstPage(self) -> None:
        """
        A directory's pages expire together, when its first page does.
        """
        self.clock.advance(4)
        self.cache.listed("u/", ObjectListing([info("u/m5")]), self.cache.mark(), "u/m")
        self.clock.advance(1)
        self.assertIs(self.cache.lookup("u/m5"), UNLISTED)

    def test_pageFor(self) -> None:
        """
        The pages listed at names start at L{RUN} entries and double up to
        L{PAGE} while the names go up; a name before the last starts again.
        """
        sizes = [self.cache.pageFor(f"u/n{n:02d}") for n in range(10)]
        self.assertEqual(sizes, [RUN, 2 * RUN, 4 * RUN, 8 * RUN, 16 * RUN, 32 * RUN] + [PAGE] * 4)
        self.assertEqual(self.cache.pageFor("u/b"), RUN)
        self.assertEqual(self.cache.pageFor("elsewhere/x"), RUN)

    def test_pagesBounded(self) -> None:
        """
        A directory whose pages would exceed the bound keeps only its
        latest page.
        """
        cache = cacheOf(self.clock, maxEntries=10)
        cache.listed(
            "u/", ObjectListing([info(f"u/a{n}") for n in range(5)], token="t"), cache.mark()
        )
        cache.listed(
            "u/", ObjectListing([info(f"u/m{n}") for n in range(5)], token="t"), cache.mark(), "u/m"
        )
        self.assertIs(cache.lookup("u/a0"), OUTSIDE)
        self.assertEqual(cache.lookup("u/m0"), info("u/m0"))
        self.assertLessEqual(cache.entries, 10)


class BoundTests(SynchronousTestCase):
    """
    The cache holds at most C{maxEntries} names, dropping the directories
    used least recently.
    """

    def test_leastRecentlyUsedDropped(self) -> None:
        """
        Listing past the bound drops the directory looked up longest ago.
        """
        cache = cacheOf(Clock(), maxEntries=28)
        for name in "abc":
            entries = [info(f"{name}/{n}") for n in range(7)]
            cache.listed(f"{name}/", ObjectListing(entries), cache.mark())
        cache.lookup("a/0")
        cache.listed("d/", ObjectListing([info(f"d/{n}") for n in range(7)]), cache.mark())
        self.assertIs(cache.lookup("b/0"), UNLISTED)
        self.assertEqual(cache.lookup("a/0"), info("a/0"))
        self.assertEqual(cache.lookup("d/0"), info("d/0"))
        self.assertLessEqual(cache.entries, 28)

    def test_storedCounted(self) -> None:
        """
        Files stored into a cached directory count against the bound (as
        does the directory and each page of it), and the directory is
        dropped once it alone exceeds it.
        """
        cache = cacheOf(Clock(), maxEntries=10)
        cache.listed("u/", ObjectListing(), cache.mark())
        for n in range(8):
            cache.stored(info(f"u/{n}"))
        self.assertEqual(cache.entries, 10)
        cache.stored(info("u/8"))
        self.assertIs(cache.lookup("u/0"), UNLISTED)
        self.assertEqual(cache.entries, 0)

    def test_largeListingNotCached(self) -> None:
        """
        A listing with more names than the bound is not cached at all.
        """
        cache = cacheOf(Clock(), maxEntries=5)
        cache.listed("u/", ObjectListing([info(f"u/{n}") for n in range(5)]), cache.mark())
        self.assertIs(cache.lookup("u/0"), UNLISTED)
        self.assertEqual(cache.entries, 0)


class LateReplies:
    """
    A store that applies each write at once but answers it only when the
    test says, as S3 may answer writes in another order than it applied
    them.
    """

    def __init__(self, store: MemoryObjectStore) -> None:
        self.store = store
        self.waiting: list[tuple[Deferred[Any], object]] = []

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.store, name)
        if name not in ("putObject", "deleteObject"):
            return method

        def late(*args: Any) -> Deferred[Any]:
            reply: Deferred[Any] = Deferred()
            method(*args).addBoth(lambda result: self.waiting.append((reply, result)))
            return reply

        return late

    def answer(self, index: int) -> None:
        """
        Answer the write at C{index} of those not answered yet.
        """
        reply, result = self.waiting.pop(index)
        reply.callback(result)


class OverlapTests(SynchronousTestCase):
    """
    Writes to one key under way at once make it unknown, whatever order
    their answers come in; a write alone is entered exactly.
    """

    def setUp(self) -> None:
        self.memory = MemoryObjectStore()
        self.late = LateReplies(self.memory)
        self.cache = cacheOf(Clock())
        self.store = CachingStore(self.late, self.cache)  # type: ignore[arg-type]
        self.cache.listed("u/", ObjectListing(), self.cache.mark())

    def test_twoPuts(self) -> None:
        """
        Two PUTs of one key answered in the other order than applied leave
        it unknown, not as the last answered; one alone afterwards is
        entered.
        """
        self.store.putObject("u/f", b"a" * 10)
        self.store.putObject("u/f", b"b" * 3)
        self.late.answer(1)
        self.late.answer(0)
        self.assertIs(self.cache.lookup("u/f"), OUTSIDE)
        self.cache.listed(
            "u/", self.successResultOf(self.memory.listDirectory("u/", 10)), self.cache.mark()
        )
        self.assertEqual(self.cache.lookup("u/f").size, 3)  # type: ignore[union-attr]
        self.store.putObject("u/f", b"c" * 5)
        self.late.answer(0)
        self.assertEqual(self.cache.lookup("u/f").size, 5)  # type: ignore[union-attr]

    def test_putAndDelete(self) -> None:
        """
        A PUT answered after a deletion that followed it leaves the key
        unknown, not stored.
        """
        self.store.putObject("u/f", b"x")
        self.store.deleteObject("u/f")
        self.late.answer(1)
        self.late.answer(0)
        self.assertIs(self.cache.lookup("u/f"), OUTSIDE)


class CachingStoreTests(SynchronousTestCase):
    """
    L{CachingStore} is the store it wraps, telling the cache of each change
    once the store answered it.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.cache = cacheOf(self.clock, maxEntries=5000)
        self.memory = MemoryObjectStore()
        self.store = CachingStore(self.memory, self.cache)
        self.cache.listed("u/", ObjectListing([info("u/old")]), self.cache.mark())

    def test_interface(self) -> None:
        """
        It provides L{IObjectStore}, and any other attribute is the store's.
        """
        verifyObject(IObjectStore, self.store)
        self.assertIs(self.store.calls, self.memory.calls)

    def test_putObject(self) -> None:
        """
        A file stored is entered with its size and ETag, and whole: with
        the metadata and settings it was stored with, as a HEAD reports
        them.
        """
        stored = self.successResultOf(
            self.store.putObject("u/new", b"12345", {"mtime": "7"}, ObjectSettings(sse="AES256"))
        )
        whole = ObjectInfo(
            "u/new", 5, 1000, stored.etag, {"mtime": "7"}, ObjectSettings(sse="AES256")
        )
        self.assertEqual(self.cache.lookup("u/new"), whole)
        self.assertEqual(self.cache.whole("u/new"), whole)
        self.assertIsNone(self.cache.whole("u/old"))

    def test_putFailed(self) -> None:
        """
        A PUT that failed may still have stored the object: its name is
        unknown.
        """
        self.memory.failNext("putObject")
        self.failureResultOf(self.store.putObject("u/new", b"12345"))
        self.assertIs(self.cache.lookup("u/new"), OUTSIDE)

    def test_marker(self) -> None:
        """
        A directory marker stored makes the directory's name unknown.
        """
        self.successResultOf(self.store.putObject("u/dir/", b""))
        self.assertIs(self.cache.lookup("u/dir"), OUTSIDE)

    def test_delete(self) -> None:
        """
        A deletion makes the name unknown.
        """
        self.successResultOf(self.store.putObject("u/old", b"x"))
        self.successResultOf(self.store.deleteObject("u/old"))
        self.assertIs(self.cache.lookup("u/old"), OUTSIDE)

    def test_copy(self) -> None:
        """
        A copy enters its destination whole, with the metadata and
        settings it was given; the source is unchanged.
        """
        self.successResultOf(self.store.putObject("u/old", b"x"))
        (found,) = self.successResultOf(self.memory.listDirectory("u/", 10)).objects
        settings = ObjectSettings("GLACIER", tags=(("a", "b"),))
        copied = self.successResultOf(
            self.store.copyObject("u/old", "u/copy", found.etag, 1, {"m": "1"}, settings)
        )
        whole = ObjectInfo("u/copy", 1, 1000, copied.etag, {"m": "1"}, ObjectSettings("GLACIER"))
        self.assertEqual(self.cache.lookup("u/copy"), whole)
        self.assertEqual(self.cache.whole("u/copy"), whole)
        self.assertEqual(self.cache.lookup("u/old"), ObjectInfo("u/old", 1, 1000, found.etag))

    def test_copyOverlapping(self) -> None:
        """
        A copy onto a key another write to is under way makes it unknown.
        """
        self.successResultOf(self.store.putObject("u/old", b"x"))
        (found,) = self.successResultOf(self.memory.listDirectory("u/", 10)).objects
        self.store._writing["u/copy"] = 1
        self.successResultOf(
            self.store.copyObject("u/old", "u/copy", found.etag, 1, {}, found.settings)
        )
        self.assertIs(self.cache.lookup("u/copy"), OUTSIDE)
        self.assertIsNone(self.cache.whole("u/copy"))

    def test_multipart(self) -> None:
        """
        A multipart upload completed makes its name unknown (its size is
        not at hand).
        """
        uploadId = self.successResultOf(self.store.createMultipartUpload("u/big"))
        part = self.successResultOf(self.store.uploadPart("u/big", uploadId, 1, b"data"))
        self.assertIsNone(self.cache.lookup("u/big"))
        self.successResultOf(self.store.completeMultipartUpload("u/big", uploadId, [part]))
        self.assertIs(self.cache.lookup("u/big"), OUTSIDE)

    def test_listingsCached(self) -> None:
        """
        The first page of a directory's listing asked for a full page goes
        into the cache, and so does a page listed at a name (C{startAfter})
        of any length; a shorter listing from the start (a probe, even when
        it is all of the directory), a page continued from a token and a
        listing of a name prefix do not.
        """
        self.successResultOf(self.memory.putObject("e/only", b"x"))
        self.successResultOf(self.store.listDirectory("e/", 2))
        self.assertIs(self.cache.lookup("e/only"), UNLISTED)
        for n in range(3):
            self.successResultOf(self.memory.putObject(f"d/{n}", b"x"))
        self.successResultOf(self.store.listDirectory("d/", 2))
        self.assertIs(self.cache.lookup("d/0"), UNLISTED)
        self.successResultOf(self.store.listDirectory("d/", 2, "token"))
        self.assertIs(self.cache.lookup("d/0"), UNLISTED)
        self.successResultOf(self.store.listDirectory("d/0", 1000))
        self.assertIs(self.cache.lookup("d/0"), UNLISTED)
        self.successResultOf(self.store.listDirectory("d/", 1000))
        self.assertEqual(self.cache.lookup("d/2").size, 1)  # type: ignore[union-attr]
        self.assertIsNone(self.cache.lookup("d/3"))
        for n in range(3, 1001):
            self.successResultOf(self.memory.putObject(f"d/{n}", b"x"))
        self.successResultOf(self.store.listDirectory("d/", 1000))
        self.assertEqual(self.cache.lookup("d/3").size, 1)  # type: ignore[union-attr]
        self.assertIs(self.cache.lookup("d/999"), OUTSIDE)
        self.successResultOf(self.store.listDirectory("d/", RUN, startAfter=startAfter("d/999")))
        self.assertEqual(self.cache.lookup("d/999").size, 1)  # type: ignore[union-attr]
