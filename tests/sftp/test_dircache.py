"""
Tests for the directory cache as the SFTP server uses it
(L{twisted_s3sftp.sftp.server.S3SFTPServer._lookup} over a
L{twisted_s3sftp.store.cached.CachingStore}): a batch of uploads into one
directory lists it once, this server's own changes are seen at once, and
other servers' within the TTL.
"""

from __future__ import annotations

from typing import Any

from twisted.conch.interfaces import ISFTPServer
from twisted.conch.ssh.filetransfer import FX_NO_SUCH_FILE, FXF_READ, SFTPError
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from twisted_s3sftp.sftp.flow import MemoryLimit
from twisted_s3sftp.ssh.session import S3User
from twisted_s3sftp.store.cached import CachingStore
from twisted_s3sftp.store.dircache import DirectoryCache
from twisted_s3sftp.store.memory import MemoryObjectStore
from twisted_s3sftp.store.parts import MiB

from .test_namespace import readAll
from .test_server import POLICY, SFTPTestCase


def cachedServer(
    ttl: float = 5.0, absentKnown: bool = True
) -> tuple[Any, MemoryObjectStore, Clock]:
    """
    @param absentKnown: L{DirectoryCache.absentKnown} (C{False} in a
        worker of C{--workers}).
    @return: the C{ISFTPServer} of user C{alice} over a store with a
        directory cache of C{ttl} seconds (none for 0), the store, and
        the clock.
    """
    clock = Clock()
    memory = MemoryObjectStore()
    cache = DirectoryCache(ttl, clock.seconds, absentKnown=absentKnown)
    store = CachingStore(memory, cache) if ttl else memory
    user = S3User("alice", "alice/", store, POLICY, MemoryLimit(1024 * MiB), clock)
    return ISFTPServer(user), memory, clock


class CachedLookupTests(SFTPTestCase):
    """
    Lookups in a directory listed within the TTL cost no S3 request.
    """

    def outcome(self, server: Any, path: bytes) -> object:
        """
        @return: the attributes C{stat} gives C{path}, or the SFTP status
            it fails with.
        """
        d = server.getAttrs(path, True)
        failures: list[int] = []
        d.addErrback(lambda f: failures.append(f.trap(SFTPError) and f.value.code))
        result = self.successResultOf(d)
        return failures[0] if failures else result

    def test_batchListsOnce(self) -> None:
        """
        Twenty files uploaded into one directory as OpenSSH's C{put} does
        (a C{stat} of the target, then the upload) list the directory
        once: every later C{stat} of a new name is answered from the
        cache.
        """
        server, memory, _ = cachedServer()
        for n in range(20):
            path = b"/batch/f%d" % (n,)
            self.assertEqual(self.outcome(server, path), FX_NO_SUCH_FILE)
            self.upload(server, path, b"x" * n)
        self.assertEqual(memory.calls.count("listDirectory"), 1)
        self.assertEqual(memory.calls.count("putObject"), 20)
        self.assertEqual(memory.calls.count("headObject"), 0)

    def test_largeDirectoryInOrder(self) -> None:
        """
        In a directory larger than a page, a batch going through its names
        in order (each C{stat}ed, then uploaded over), then on to new
        names past its last, lists it a few times in all, not once per
        file: the pages at the names beyond the first page grow as the
        batch goes on, and the one that ends the listing answers for
        every new name after it.  Every C{stat} is answered as S3 would.
        """
        server, memory, _ = cachedServer()
        for n in range(1200):
            self.successResultOf(memory.putObject(f"alice/big/f{n:04d}", b"x" * 3))
        memory.calls.clear()
        for n in range(1300):
            path = b"/big/f%04d" % (n,)
            answer = self.outcome(server, path)
            if n < 1200:
                self.assertEqual(answer["size"], 3)  # type: ignore[index]
            else:
                self.assertEqual(answer, FX_NO_SUCH_FILE)
            self.upload(server, path, b"y")
        self.assertLessEqual(memory.calls.count("listDirectory"), 7)
        self.assertEqual(memory.calls.count("putObject"), 1300)

    def test_largeDirectoryBackwards(self) -> None:
        """
        Names looked up going back through a large directory cost one
        short page each (L{twisted_s3sftp.store.dircache.RUN} names), and
        each is answered right.
        """
        server, memory, _ = cachedServer()
        for n in range(1100):
            self.successResultOf(memory.putObject(f"alice/big/f{n:04d}", b"x" * 3))
        self.assertEqual(self.outcome(server, b"/big/f0000")["size"], 3)  # type: ignore[index]
        memory.calls.clear()
        for n in range(1099, 1000, -20):
            self.assertEqual(self.outcome(server, b"/big/f%04d" % (n,))["size"], 3)  # type: ignore[index]
            self.assertEqual(self.outcome(server, b"/big/f%04dx" % (n,)), FX_NO_SUCH_FILE)
        self.assertEqual(memory.calls.count("listDirectory"), 5)

    def test_directoryAmongSiblings(self) -> None:
        """
        A sub-directory whose name other files extend with characters that
        sort before C{/} (C{logs-00}, ... beside C{logs/}) is still a
        directory to C{stat} after a removal in it makes its name unknown
        and a short page is listed at it, as it is without the cache.
        """
        for ttl in (5.0, 0):
            server, memory, _ = cachedServer(ttl)
            for n in range(20):
                self.successResultOf(memory.putObject(f"alice/d/logs-{n:02d}", b"x"))
            for name in ("a", "b"):
                self.successResultOf(memory.putObject(f"alice/d/logs/{name}", b"x"))
            self.assertEqual(self.outcome(server, b"/d/logs")["permissions"], 0o40755)  # type: ignore[index]
            self.successResultOf(server.removeFile(b"/d/logs/a"))
            self.assertEqual(self.outcome(server, b"/d/logs")["permissions"], 0o40755)  # type: ignore[index]

    def test_ownFilesWhole(self) -> None:
        """
        A file this server just stored, or copied onto itself to set its
        time (as rclone does after each upload), is answered to C{stat},
        C{setstat}, a hash request and OPEN from what was written, without
        a HEAD, and the C{stat} of its directory from the directory's
        listing: an upload, its time set, its C{stat}, its directory's and
        its hash cost a PutObject and a CopyObject and nothing else once
        the directory is listed (rclone's pattern).
        """
        server, memory, _ = cachedServer()
        self.assertEqual(self.outcome(server, b"/r/first"), FX_NO_SUCH_FILE)
        memory.calls.clear()
        for n in range(10):
            path = b"/r/f%d" % (n,)
            self.upload(server, path, b"x" * n)
            self.successResultOf(server.setAttrs(path, {"mtime": 1000 + n, "atime": 0}))
            attributes = self.outcome(server, path)
            self.assertEqual(attributes["mtime"], 1000 + n)  # type: ignore[index]
            self.assertEqual(attributes["size"], n)  # type: ignore[index]
            directory = self.outcome(server, b"/r")
            self.assertEqual(directory["permissions"], 0o40755)  # type: ignore[index]
            hashed = self.successResultOf(Deferred.fromCoroutine(server.hashedFile(path)))
            self.assertEqual(hashed.metadata["mtime"], str(1000 + n))
            self.assertIn("sha256", hashed.metadata)
        self.assertEqual(memory.calls.count("putObject"), 10)
        self.assertEqual(memory.calls.count("copyObject"), 10)
        # (and the home directory's listing, for the first stat of /r)
        self.assertEqual(memory.calls.count("listDirectory"), 1)
        self.assertEqual(len(memory.calls), 21, memory.calls)
        f = self.successResultOf(server.openFile(b"/r/f3", FXF_READ, {}))
        self.assertEqual(self.successResultOf(f.readChunk(0, 100)), b"xxx")

    def test_untimedFileHeaded(self) -> None:
        """
        A file this server stored without a time of the client's is
        C{stat}ed with a HEAD: the cache knows when the write was sent, not
        S3's C{LastModified}, which is the time C{stat} reports.
        """
        server, memory, _ = cachedServer()
        self.assertEqual(self.outcome(server, b"/u/plain"), FX_NO_SUCH_FILE)
        self.upload(server, b"/u/plain", b"abc")
        memory.calls.clear()
        self.assertEqual(self.outcome(server, b"/u/plain")["size"], 3)  # type: ignore[index]
        self.assertEqual(memory.calls, ["headObject"])

    def test_setTimeOfSendTime(self) -> None:
        """
        A SETSTAT of a file just stored, to the very second the cache has
        for it (when its write was sent), still stores the time: the
        cache's second is not S3's, so it is not taken as already set.
        """
        server, memory, clock = cachedServer()
        clock.advance(1000.7)
        self.assertEqual(self.outcome(server, b"/u/f"), FX_NO_SUCH_FILE)
        self.upload(server, b"/u/f", b"abc")
        memory.calls.clear()
        self.successResultOf(server.setAttrs(b"/u/f", {"mtime": 1000, "atime": 0}))
        self.assertEqual(memory.calls, ["copyObject"])
        clock.advance(10)
        self.assertEqual(self.outcome(server, b"/u/f")["mtime"], 1000)  # type: ignore[index]

    def test_withoutCache(self) -> None:
        """
        With a TTL of 0 (no L{CachingStore}), each C{stat} lists, as before
        the cache.
        """
        server, memory, _ = cachedServer(ttl=0)
        for n in range(5):
            path = b"/batch/f%d" % (n,)
            self.assertEqual(self.outcome(server, path), FX_NO_SUCH_FILE)
            self.upload(server, path, b"x")
        self.assertEqual(memory.calls.count("listDirectory"), 5)

    def test_sameAnswers(self) -> None:
        """
        Through uploads, C{stat}s, removals, renames, C{mkdir} and C{rmdir},
        a server with the cache answers every C{stat} as one without it.
        """
        cached, _, _ = cachedServer()
        plain, _, _ = cachedServer(ttl=0)
        paths = [b"/a", b"/d", b"/d/b", b"/d/c", b"/e", b"/e/f", b"/g"]

        def everyStat() -> list[object]:
            answers = []
            for server in (cached, plain):
                answers.append([self.outcome(server, path) for path in paths])
            self.assertEqual(answers[0], answers[1])
            return answers[0]

        steps: list[Any] = [
            lambda s: self.upload(s, b"/a", b"1"),
            lambda s: self.upload(s, b"/d/b", b"22"),
            lambda s: self.successResultOf(s.makeDirectory(b"/e", {})),
            lambda s: self.successResultOf(s.posixRename(b"/d/b", b"/d/c")),
            lambda s: self.upload(s, b"/e/f", b"333"),
            lambda s: self.successResultOf(s.removeFile(b"/e/f")),
            lambda s: self.successResultOf(s.removeDirectory(b"/e")),
            lambda s: self.successResultOf(s.removeFile(b"/d/c")),
            lambda s: self.upload(s, b"/g", b"4444"),
            lambda s: self.successResultOf(s.setAttrs(b"/g", {"mtime": 1234567890, "atime": 0})),
            lambda s: self.successResultOf(s.posixRename(b"/g", b"/a")),
        ]
        seen = [everyStat()]
        for step in steps:
            for server in (cached, plain):
                step(server)
            seen.append(everyStat())
        # The sequence went through both states of every path.
        self.assertIn(FX_NO_SUCH_FILE, [answers[1] for answers in seen])
        self.assertNotEqual(seen[0], seen[-1])

    def test_othersWithinTtl(self) -> None:
        """
        A file another server stored in a directory listed here is seen
        once the listing expires (until then, C{stat} does not see it).
        """
        server, memory, clock = cachedServer()
        self.assertEqual(self.outcome(server, b"/in/x"), FX_NO_SUCH_FILE)
        self.successResultOf(memory.putObject("alice/in/x", b"other"))
        self.assertEqual(self.outcome(server, b"/in/x"), FX_NO_SUCH_FILE)
        clock.advance(5)
        self.assertEqual(self.outcome(server, b"/in/x")["size"], 5)  # type: ignore[index]

    def test_othersFileChangedWithinTtl(self) -> None:
        """
        A SETSTAT or a rename of a file another writer stored after its
        directory was listed here (another worker of C{--workers}: rclone
        sets each file's time on a connection of its own) asks S3 before
        failing, and succeeds; the cache then forgets the name, so C{stat}
        finds the file too.
        """
        server, memory, _ = cachedServer()
        self.assertEqual(self.outcome(server, b"/in/x"), FX_NO_SUCH_FILE)
        self.successResultOf(memory.putObject("alice/in/x", b"other"))
        self.successResultOf(memory.putObject("alice/in/y", b"other"))
        self.successResultOf(server.setAttrs(b"/in/x", {"mtime": 1000, "atime": 1000}))
        self.assertEqual(self.outcome(server, b"/in/x")["mtime"], 1000)  # type: ignore[index]
        self.successResultOf(server.renameFile(b"/in/y", b"/in/z"))
        self.assertEqual(memory.objects["alice/in/z"][0], b"other")

    def test_absentChangedAsksOnce(self) -> None:
        """
        A SETSTAT of a name that is absent from the cache and from S3
        fails with C{FX_NO_SUCH_FILE} after one listing, and leaves the
        cache's listing in place for the C{stat}s that follow.
        """
        server, memory, _ = cachedServer()
        self.assertEqual(self.outcome(server, b"/in/x"), FX_NO_SUCH_FILE)
        memory.calls.clear()
        failure = self.failureResultOf(server.setAttrs(b"/in/x", {"mtime": 1, "atime": 1}))
        self.assertEqual(failure.trap(SFTPError) and failure.value.code, FX_NO_SUCH_FILE)
        self.assertEqual(memory.calls, ["listDirectory"])
        memory.calls.clear()
        self.assertEqual(self.outcome(server, b"/in/x"), FX_NO_SUCH_FILE)
        self.assertEqual(memory.calls, [])

    def test_workerAsksBeforeAbsent(self) -> None:
        """
        In a worker of C{--workers} (L{DirectoryCache.absentKnown} off), a
        C{stat} of a name its cached listing lacks asks S3 first: a file
        a fellow worker stored within the TTL is found; a name that
        exists is still answered from the cache.
        """
        server, memory, _ = cachedServer(absentKnown=False)
        self.assertEqual(self.outcome(server, b"/in/x"), FX_NO_SUCH_FILE)
        self.upload(server, b"/in/mine", b"abc")
        self.successResultOf(memory.putObject("alice/in/x", b"other"))
        self.assertEqual(self.outcome(server, b"/in/x")["size"], 5)  # type: ignore[index]
        memory.calls.clear()
        self.successResultOf(server.setAttrs(b"/in/mine", {"mtime": 7, "atime": 7}))
        self.assertEqual(memory.calls, ["copyObject"])

    def test_downloadOfCachedFile(self) -> None:
        """
        A file this server stored downloads, found through the cache.
        """
        server, _, _ = cachedServer()
        self.upload(server, b"/dl/f", b"content")
        f = self.successResultOf(server.openFile(b"/dl/f", FXF_READ, {}))
        self.assertEqual(self.successResultOf(f.readChunk(0, 100)), b"content")

    def test_listingRefreshes(self) -> None:
        """
        Listing a directory (C{ls}) refreshes the cache: a file another
        writer stored, which C{ls} shows, C{stat} then finds too.
        """
        server, memory, _ = cachedServer()
        self.assertEqual(self.outcome(server, b"/in/x"), FX_NO_SUCH_FILE)
        self.successResultOf(memory.putObject("alice/in/x", b"other"))
        listing = self.successResultOf(server.openDirectory(b"/in"))
        self.assertEqual([name for name, _, _ in readAll(self, listing)], [b"x"])
        self.assertEqual(self.outcome(server, b"/in/x")["size"], 5)  # type: ignore[index]
