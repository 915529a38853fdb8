"""
The file-system semantics of L{twisted_s3sftp.sftp.server.S3SFTPServer} over an
in-memory store: directories, times, renames, removes, open flags and the
protocol extensions.
"""

from __future__ import annotations

import struct
from typing import Any

from twisted.conch.ssh.filetransfer import (
    FX_BAD_MESSAGE,
    FX_EOF,
    FX_FAILURE,
    FX_NO_SUCH_FILE,
    FX_OP_UNSUPPORTED,
    FX_PERMISSION_DENIED,
    FXF_CREAT,
    FXF_EXCL,
    FXF_READ,
    FXF_TRUNC,
    FXF_WRITE,
    SFTPError,
)
from twisted.internet.task import Clock

from tests.sftp.test_server import PART, WRITE, SFTPTestCase, makeServer
from twisted_s3sftp.errors import FX_FILE_ALREADY_EXISTS
from twisted_s3sftp.sftp.directory import BATCH_BYTES, BATCH_ENTRIES, PAGE
from twisted_s3sftp.sftp.extensions import MAX_HANDLES, MAX_READ, MAX_SFTP_MESSAGE, MAX_WRITE
from twisted_s3sftp.store.memory import MemoryObjectStore

MODE_FILE = 0o100644
MODE_DIR = 0o040755


def readAll(test: SFTPTestCase, listing: Any) -> list[tuple[bytes, bytes, dict[str, int]]]:
    """
    @return: every entry of an open directory, read batch by batch until
        C{FX_EOF}.
    """
    entries = []
    while True:
        d = listing.readBatch()
        result = []
        d.addBoth(result.append)
        (outcome,) = result
        if isinstance(getattr(outcome, "value", None), SFTPError):
            test.assertEqual(outcome.value.code, FX_EOF)
            return entries
        entries.extend(outcome)


class DirectoryTests(SFTPTestCase):
    """
    Directories are prefixes; C{mkdir} markers make empty ones last.
    """

    def names(self, server: Any, path: bytes) -> list[tuple[bytes, int]]:
        listing = self.successResultOf(server.openDirectory(path))
        return [(name, attrs["permissions"]) for name, _, attrs in readAll(self, listing)]

    def test_realPath(self) -> None:
        """
        C{realpath} of C{.} and C{..} is C{/}; nothing above the home is
        ever returned.
        """
        server, _ = makeServer()
        self.assertEqual(self.successResultOf(server.realPath(b".")), b"/")
        self.assertEqual(self.successResultOf(server.realPath(b"")), b"/")
        self.assertEqual(self.successResultOf(server.realPath(b"/../..")), b"/")
        self.assertEqual(self.successResultOf(server.realPath(b"a/../b")), b"/b")

    def test_statAndListing(self) -> None:
        """
        Files report size and mode C{0100644}, directories (markers or
        prefixes) C{040755}; listings show both, sorted, without the
        directory's own marker; missing paths get C{NO_SUCH_FILE}.
        """
        server, store = makeServer()
        self.successResultOf(server.makeDirectory(b"empty", {}))
        self.upload(server, b"sub/f", b"12345")
        self.upload(server, b"top", b"xy")
        store.objects["bob/private"] = (b"no", 0)
        attrs = self.successResultOf(server.getAttrs(b"sub/f", True))
        self.assertEqual((attrs["size"], attrs["permissions"]), (5, MODE_FILE))
        for d in [b"/", b"sub", b"empty"]:
            attrs = self.successResultOf(server.getAttrs(d, True))
            self.assertEqual(attrs["permissions"], MODE_DIR, d)
        self.assertStatus(server.getAttrs(b"nope", True), FX_NO_SUCH_FILE)
        self.assertEqual(
            self.names(server, b"/"),
            [(b"empty", MODE_DIR), (b"sub", MODE_DIR), (b"top", MODE_FILE)],
        )
        listing = self.successResultOf(server.openDirectory(b"/"))
        longNames = [long for _, long, _ in readAll(self, listing)]
        self.assertTrue(longNames[2].startswith(b"-rw-r--r--"))
        self.assertTrue(longNames[2].endswith(b" top"))
        self.assertTrue(longNames[0].startswith(b"drwxr-xr-x"))
        self.assertEqual(self.names(server, b"empty"), [])
        self.assertStatus(server.openDirectory(b"nope"), FX_NO_SUCH_FILE)

    def test_otherUsersInvisible(self) -> None:
        """
        Another user's objects cannot be listed, stated or overwritten:
        their paths resolve inside this user's home.
        """
        server, store = makeServer()
        store.objects["bob/private"] = (b"secret", 0)
        self.assertStatus(server.getAttrs(b"/../bob/private", True), FX_NO_SUCH_FILE)
        self.assertStatus(server.openDirectory(b"/../bob"), FX_NO_SUCH_FILE)
        self.upload(server, b"../bob/private", b"mine")
        self.assertEqual(store.objects["bob/private"][0], b"secret")
        self.assertEqual(store.objects["alice/bob/private"][0], b"mine")

    def test_mkdirMarker(self) -> None:
        """
        C{mkdir} writes a zero-byte C{dir/} marker, which another server on
        the same bucket (no shared memory) then sees; making it again, or
        over a file, fails.
        """
        server, store = makeServer()
        self.successResultOf(server.makeDirectory(b"d", {}))
        self.assertEqual(store.objects["alice/d/"][0], b"")
        other, _ = makeServer(store)
        attrs = self.successResultOf(other.getAttrs(b"d", True))
        self.assertEqual(attrs["permissions"], MODE_DIR)
        self.assertEqual(self.names(other, b"/"), [(b"d", MODE_DIR)])
        self.assertStatus(server.makeDirectory(b"d", {}), FX_FAILURE)
        self.upload(server, b"f", b"1")
        self.assertStatus(server.makeDirectory(b"f", {}), FX_FAILURE)

    def test_directoryTimes(self) -> None:
        """
        A directory made with C{mkdir} reports when it was made, not 1970;
        sub-directories in a listing report the current time.
        """
        clock = Clock()
        clock.advance(1_700_000_000)
        store = MemoryObjectStore(now=clock.seconds)
        server, _ = makeServer(store, clock=clock)
        self.successResultOf(server.makeDirectory(b"d", {}))
        clock.advance(500)
        self.assertEqual(self.successResultOf(server.getAttrs(b"d", True))["mtime"], 1_700_000_000)
        self.assertEqual(self.successResultOf(server.getAttrs(b"/", True))["mtime"], 1_700_000_500)
        listing = self.successResultOf(server.openDirectory(b"/"))
        ((_, _, attrs),) = readAll(self, listing)
        self.assertEqual(attrs["mtime"], 1_700_000_500)

    def test_listingTimes(self) -> None:
        """
        Files are listed with the time C{stat} reports: the stored one
        when a client set it, otherwise when S3 stored the object (one
        HEAD per file listed).
        """
        server, store = makeServer()
        store.objects["alice/d/kept"] = (b"abc", 50)
        store.metadata["alice/d/kept"] = {"mtime": "1234.5"}
        store.objects["alice/d/plain"] = (b"abc", 60)
        store.objects["alice/d/sub/x"] = (b"", 70)
        listing = self.successResultOf(server.openDirectory(b"d"))
        store.calls.clear()
        times = {name: attrs["mtime"] for name, _, attrs in readAll(self, listing)}
        self.assertEqual(times[b"kept"], 1234)
        self.assertEqual(times[b"plain"], 60)
        self.assertEqual(store.calls.count("headObject"), 2)
        self.assertEqual(self.successResultOf(server.getAttrs(b"d/kept", True))["mtime"], 1234)

    def test_listingFailure(self) -> None:
        """
        A failed S3 listing fails the OPENDIR with the store's error, not
        an internal one.
        """
        server, store = makeServer()
        store.objects["alice/d/f"] = (b"abc", 50)
        store.failNext("listDirectory")
        e = self.assertStatus(server.openDirectory(b"d"), FX_FAILURE)
        self.assertIn("injected", e.message)

    def test_lookupFailureKeepsNames(self) -> None:
        """
        A HEAD that fails while listing leaves that file with S3's time
        instead of failing the READDIR: no name is lost, and the failure
        is logged once per batch.
        """
        server, store = makeServer()
        for name in ("a", "b", "c"):
            store.objects[f"alice/d/{name}"] = (b"abc", 50)
            store.metadata[f"alice/d/{name}"] = {"mtime": "1234"}
        listing = self.successResultOf(server.openDirectory(b"d"))
        store.failNext("headObject")
        store.failNext("headObject", RuntimeError("bug"))
        times = {name: attrs["mtime"] for name, _, attrs in readAll(self, listing)}
        self.assertEqual(times, {b"a": 50, b"b": 50, b"c": 1234})
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_unusableStoredTime(self) -> None:
        """
        A stored time SFTP cannot carry (negative, past 2106, not a
        number), as another tool may write, is ignored in favour of S3's
        time, so that C{stat} and listings still work.
        """
        server, store = makeServer()
        for name, value in [("neg", "-5"), ("far", str(2**32)), ("nan", "nan"), ("inf", "1e999")]:
            store.objects[f"alice/{name}"] = (b"x", 77)
            store.metadata[f"alice/{name}"] = {"mtime": value}
            attrs = self.successResultOf(server.getAttrs(name.encode(), True))
            self.assertEqual(attrs["mtime"], 77, name)
        listing = self.successResultOf(server.openDirectory(b"/"))
        self.assertEqual({attrs["mtime"] for _, _, attrs in readAll(self, listing)}, {77})

    def test_rmdir(self) -> None:
        """
        C{rmdir} removes an empty directory's marker; a directory with
        anything in it (an object, a sub-directory, an upload under way)
        gets a clear failure; a missing one C{NO_SUCH_FILE}; a file, and
        the home itself, are refused.
        """
        server, store = makeServer()
        self.successResultOf(server.makeDirectory(b"d", {}))
        self.successResultOf(server.removeDirectory(b"d"))
        self.assertNotIn("alice/d/", store.objects)
        self.assertStatus(server.getAttrs(b"d", True), FX_NO_SUCH_FILE)
        self.assertStatus(server.removeDirectory(b"d"), FX_NO_SUCH_FILE)
        self.successResultOf(server.makeDirectory(b"full", {}))
        self.upload(server, b"full/f", b"x")
        e = self.assertStatus(server.removeDirectory(b"full"), FX_FAILURE)
        self.assertIn("not empty", e.message)
        self.successResultOf(server.makeDirectory(b"nested", {}))
        self.successResultOf(server.makeDirectory(b"nested/inner", {}))
        self.assertStatus(server.removeDirectory(b"nested"), FX_FAILURE)
        self.successResultOf(server.makeDirectory(b"busy", {}))
        f = self.successResultOf(server.openFile(b"busy/up", WRITE, {}))
        self.assertStatus(server.removeDirectory(b"busy"), FX_FAILURE)
        self.successResultOf(f.close())
        self.assertStatus(server.removeDirectory(b"full/f"), FX_FAILURE)
        self.assertStatus(server.removeDirectory(b"/"), FX_PERMISSION_DENIED)
        self.assertIn("alice/full/f", store.objects)

    def test_pagedListing(self) -> None:
        """
        A directory larger than one S3 page lists completely, in order,
        each name once, a page at a time; every READDIR batch is bounded
        in entries.
        """
        server, store = makeServer()
        count = 2 * PAGE + 500
        for i in range(count):
            store.objects[f"alice/big/f{i:05d}"] = (b"", 0)
        store.calls.clear()
        listing = self.successResultOf(server.openDirectory(b"big"))
        self.assertEqual(store.calls, ["listDirectory"])
        sizes = []
        names: list[bytes] = []
        while True:
            d = listing.readBatch()
            result: list[Any] = []
            d.addBoth(result.append)
            if not isinstance(result[0], list):
                self.assertEqual(result[0].value.code, FX_EOF)
                break
            sizes.append(len(result[0]))
            names.extend(name for name, _, _ in result[0])
        self.assertEqual(names, [f"f{i:05d}".encode() for i in range(count)])
        self.assertLessEqual(max(sizes), BATCH_ENTRIES)
        self.assertEqual(store.calls.count("listDirectory"), 3)

    def test_listingBatchBytes(self) -> None:
        """
        With long names a READDIR batch is bounded by bytes, far below the
        256 KiB OpenSSH accepts (conch-pitfalls item 8).
        """
        server, store = makeServer()
        for i in range(300):
            store.objects[f"alice/long/{i:03d}" + "n" * 900] = (b"", 0)
        listing = self.successResultOf(server.openDirectory(b"long"))
        total = 0
        while True:
            result: list[Any] = []
            listing.readBatch().addBoth(result.append)
            if not isinstance(result[0], list):
                break
            size = sum(len(n) + len(long) for n, long, _ in result[0])
            self.assertLessEqual(size, BATCH_BYTES)
            total += len(result[0])
        self.assertEqual(total, 300)


class FileTests(SFTPTestCase):
    """
    Files: uploads under way, removes, times, renames and open flags.
    """

    def test_uploadVisible(self) -> None:
        """
        A file being uploaded shows in C{stat}, C{fstat} and listings with
        the bytes received so far, even before any part reached S3; it
        replaces an existing object of the same name in the listing.
        """
        server, store = makeServer()
        self.upload(server, b"d/old", b"previous version")
        f = self.successResultOf(server.openFile(b"d/old", WRITE, {}))
        g = self.successResultOf(server.openFile(b"d/new", WRITE, {}))
        self.successResultOf(g.writeChunk(0, b"12345"))
        self.assertEqual(self.successResultOf(server.getAttrs(b"d/new", True))["size"], 5)
        self.assertEqual(self.successResultOf(g.getAttrs())["size"], 5)
        self.assertEqual(self.successResultOf(server.getAttrs(b"d/old", True))["size"], 0)
        listing = self.successResultOf(server.openDirectory(b"d"))
        entries = [(name, attrs["size"]) for name, _, attrs in readAll(self, listing)]
        self.assertEqual(sorted(entries), [(b"new", 5), (b"old", 0)])
        other, _ = makeServer(store)
        self.assertEqual(
            readAll(self, self.successResultOf(other.openDirectory(b"d")))[0][0], b"old"
        )
        self.successResultOf(f.close())
        self.successResultOf(g.close())
        self.assertEqual(self.successResultOf(server.getAttrs(b"d/new", True))["size"], 5)

    def test_remove(self) -> None:
        """
        C{remove} deletes an object; a missing one is C{NO_SUCH_FILE}; a
        directory is refused.
        """
        server, store = makeServer()
        self.upload(server, b"f", b"1")
        self.successResultOf(server.removeFile(b"f"))
        self.assertEqual(store.objects, {})
        self.assertStatus(server.removeFile(b"f"), FX_NO_SUCH_FILE)
        self.successResultOf(server.makeDirectory(b"d", {}))
        self.assertStatus(server.removeFile(b"d"), FX_FAILURE)

    def test_removeAbortsUpload(self) -> None:
        """
        Removing a file being uploaded aborts the upload: its parts are
        discarded, no object appears, the writer's CLOSE fails, and the
        older object of that name is deleted too.
        """
        server, store = makeServer()
        self.upload(server, b"f", b"old")
        f = self.successResultOf(server.openFile(b"f", WRITE, {}))
        self.successResultOf(f.writeChunk(0, b"n" * (PART + 10)))
        self.assertEqual(len(store.uploads), 1)
        self.successResultOf(server.removeFile(b"f"))
        self.assertEqual(store.uploads, {})
        self.assertStatus(f.close(), FX_FAILURE)
        self.assertEqual(store.objects, {})
        self.assertStatus(server.getAttrs(b"f", True), FX_NO_SUCH_FILE)
        g = self.successResultOf(server.openFile(b"g", WRITE, {}))
        self.successResultOf(server.removeFile(b"g"))
        self.assertStatus(g.close(), FX_FAILURE)
        self.assertEqual(store.objects, {})

    def test_removeOverlappingUploads(self) -> None:
        """
        When two uploads of one name overlap, C{remove} aborts both: no
        multipart upload is left and neither CLOSE stores an object.
        """
        server, store = makeServer()
        f = self.successResultOf(server.openFile(b"f", WRITE, {}))
        g = self.successResultOf(server.openFile(b"f", WRITE, {}))
        for upload in (f, g):
            self.successResultOf(upload.writeChunk(0, b"n" * (PART + 10)))
        self.assertEqual(len(store.uploads), 2)
        self.successResultOf(server.removeFile(b"f"))
        self.assertEqual(store.uploads, {})
        self.assertStatus(f.close(), FX_FAILURE)
        self.assertStatus(g.close(), FX_FAILURE)
        self.assertEqual(store.objects, {})
        self.assertStatus(server.getAttrs(b"f", True), FX_NO_SUCH_FILE)

    def test_removeDuringCompletion(self) -> None:
        """
        A C{remove} that arrives while the writer's CLOSE is completing
        the multipart upload does not try to abort an upload S3 is
        finishing (nothing is logged as failing to abort): the CLOSE
        succeeds, then the object is deleted.
        """
        server, store = makeServer()
        f = self.successResultOf(server.openFile(b"f", WRITE, {}))
        self.successResultOf(f.writeChunk(0, b"n" * (PART + 10)))
        store.holding.add("completeMultipartUpload")
        closing = f.close()
        removing = server.removeFile(b"f")
        self.assertNoResult(removing)
        store.holding.clear()
        store.release()
        self.successResultOf(closing)
        self.successResultOf(removing)
        self.assertNotIn("abortMultipartUpload", store.calls)
        self.assertEqual((store.objects, store.uploads), ({}, {}))
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_times(self) -> None:
        """
        A file reports the time S3 stored it until a client sets one; a
        time set during the upload (C{put -p}: FSETSTAT before CLOSE) is
        stored as C{x-amz-meta-mtime}, one set afterwards by a copy onto
        itself; modes and owners are accepted and ignored.
        """
        clock = Clock()
        clock.advance(1_700_000_000)
        store = MemoryObjectStore(now=clock.seconds)
        server, _ = makeServer(store, clock=clock)
        self.upload(server, b"plain", b"abc")
        self.assertEqual(
            self.successResultOf(server.getAttrs(b"plain", True))["mtime"], 1_700_000_000
        )
        f = self.successResultOf(server.openFile(b"kept", WRITE, {}))
        self.successResultOf(f.writeChunk(0, b"data"))
        self.successResultOf(f.setAttrs({"permissions": 0o600, "atime": 5, "mtime": 1_000_000}))
        self.assertEqual(self.successResultOf(server.getAttrs(b"kept", True))["mtime"], 1_000_000)
        self.successResultOf(f.close())
        self.assertEqual(store.metadata["alice/kept"]["mtime"], "1000000")
        self.assertEqual(self.successResultOf(server.getAttrs(b"kept", True))["mtime"], 1_000_000)
        sha = store.metadata["alice/plain"]["sha256"]
        self.successResultOf(
            server.setAttrs(b"plain", {"atime": 7, "mtime": 1234, "uid": 5, "gid": 5})
        )
        metadata = store.metadata["alice/plain"]
        for key in ("sha256-state", "md5-state", "md5chksum"):
            metadata.pop(key)
        self.assertEqual(metadata, {"sha256": sha, "mtime": "1234", "uploader": "alice"})
        self.assertEqual(self.successResultOf(server.getAttrs(b"plain", True))["mtime"], 1234)
        store.calls.clear()
        self.successResultOf(server.setAttrs(b"plain", {"mtime": 1234, "permissions": 0o644}))
        self.assertNotIn("copyObject", store.calls)
        self.successResultOf(server.setAttrs(b"/", {"mtime": 1}))
        self.assertStatus(server.setAttrs(b"missing", {"mtime": 1}), FX_NO_SUCH_FILE)

    def test_truncationRefused(self) -> None:
        """
        Changing a file's size with SETSTAT or FSETSTAT is refused with
        C{OP_UNSUPPORTED}; setting the size it already has is accepted.
        """
        server, store = makeServer()
        self.upload(server, b"f", b"abc")
        e = self.assertStatus(server.setAttrs(b"f", {"size": 0}), FX_OP_UNSUPPORTED)
        self.assertIn("size", e.message)
        self.successResultOf(server.setAttrs(b"f", {"size": 3}))
        g = self.successResultOf(server.openFile(b"g", WRITE, {}))
        self.successResultOf(g.writeChunk(0, b"xy"))
        self.assertStatus(g.setAttrs({"size": 1}), FX_OP_UNSUPPORTED)
        self.successResultOf(g.setAttrs({"size": 2}))
        self.assertEqual(store.objects["alice/f"][0], b"abc")

    def test_rename(self) -> None:
        """
        C{rename} copies the object (metadata included) and deletes the
        old one; it refuses to replace an existing file, which
        C{posix-rename} replaces; a missing source is C{NO_SUCH_FILE}.
        """
        server, store = makeServer()
        self.upload(server, b"a", b"first")
        meta = dict(store.metadata["alice/a"])
        self.successResultOf(server.renameFile(b"a", b"dir/b"))
        self.assertEqual(store.objects["alice/dir/b"][0], b"first")
        self.assertEqual(store.metadata["alice/dir/b"], meta)
        self.assertNotIn("alice/a", store.objects)
        self.upload(server, b"c", b"second")
        e = self.assertStatus(server.renameFile(b"c", b"dir/b"), FX_FAILURE)
        self.assertIn("exists", e.message)
        self.assertEqual(store.objects["alice/dir/b"][0], b"first")
        self.assertEqual(store.objects["alice/c"][0], b"second")
        self.successResultOf(server.posixRename(b"c", b"dir/b"))
        self.assertEqual(store.objects["alice/dir/b"][0], b"second")
        self.assertNotIn("alice/c", store.objects)
        self.assertStatus(server.renameFile(b"c", b"x"), FX_NO_SUCH_FILE)
        self.successResultOf(server.renameFile(b"dir/b", b"dir/b"))
        self.assertEqual(store.objects["alice/dir/b"][0], b"second")

    def test_renameRefusals(self) -> None:
        """
        A file being uploaded cannot be renamed, nor can a file be renamed
        over a directory or over an upload under way, nor the home.
        """
        server, store = makeServer()
        self.upload(server, b"f", b"1")
        self.successResultOf(server.makeDirectory(b"d", {}))
        up = self.successResultOf(server.openFile(b"up", WRITE, {}))
        self.assertStatus(server.renameFile(b"up", b"x"), FX_FAILURE)
        self.assertStatus(server.posixRename(b"f", b"d"), FX_FAILURE)
        self.assertStatus(server.posixRename(b"f", b"up"), FX_FAILURE)
        self.assertStatus(server.renameFile(b"/", b"x"), FX_PERMISSION_DENIED)
        self.successResultOf(up.close())
        self.assertEqual(store.objects["alice/f"][0], b"1")

    def test_renameDirectory(self) -> None:
        """
        An empty directory is renamed (its marker moves); a non-empty one
        gets C{OP_UNSUPPORTED} saying why; nor can a directory move into
        itself or over an existing name.
        """
        server, store = makeServer()
        self.successResultOf(server.makeDirectory(b"empty", {}))
        self.successResultOf(server.renameFile(b"empty", b"moved"))
        self.assertIn("alice/moved/", store.objects)
        self.assertNotIn("alice/empty/", store.objects)
        self.upload(server, b"full/f", b"x")
        e = self.assertStatus(server.renameFile(b"full", b"other"), FX_OP_UNSUPPORTED)
        self.assertIn("not empty", e.message)
        self.assertStatus(server.renameFile(b"moved", b"moved/in"), FX_FAILURE)
        self.assertStatus(server.renameFile(b"moved", b"full"), FX_FAILURE)
        self.assertEqual(store.objects["alice/full/f"][0], b"x")

    def test_winscpFilepart(self) -> None:
        """
        WinSCP uploads to C{name.filepart} and renames it to C{name} once
        the upload closed, removing an older C{name} first or replacing
        it with C{posix-rename}.
        """
        server, store = makeServer()
        self.upload(server, b"report.csv.filepart", b"v1")
        self.successResultOf(server.renameFile(b"report.csv.filepart", b"report.csv"))
        self.upload(server, b"report.csv.filepart", b"v2")
        self.successResultOf(server.removeFile(b"report.csv"))
        self.successResultOf(server.renameFile(b"report.csv.filepart", b"report.csv"))
        self.upload(server, b"report.csv.filepart", b"v3")
        self.successResultOf(server.posixRename(b"report.csv.filepart", b"report.csv"))
        self.assertEqual(list(store.objects), ["alice/report.csv"])
        self.assertEqual(store.objects["alice/report.csv"][0], b"v3")

    def test_openFlags(self) -> None:
        """
        EXCL on an existing file (or one being uploaded) gets
        C{FILE_ALREADY_EXISTS}; without CREAT a missing file is
        C{NO_SUCH_FILE}; a directory cannot be opened for writing, nor a
        missing file or a directory for reading.
        """
        server, store = makeServer()
        self.upload(server, b"f", b"old")
        self.assertStatus(server.openFile(b"f", WRITE | FXF_EXCL, {}), FX_FILE_ALREADY_EXISTS)
        up = self.successResultOf(server.openFile(b"new", WRITE | FXF_EXCL, {}))
        self.assertStatus(server.openFile(b"new", WRITE | FXF_EXCL, {}), FX_FILE_ALREADY_EXISTS)
        self.successResultOf(up.close())
        g = self.successResultOf(server.openFile(b"g", FXF_WRITE | FXF_CREAT, {}))
        self.successResultOf(g.close())
        self.assertStatus(server.openFile(b"h", FXF_WRITE | FXF_TRUNC, {}), FX_NO_SUCH_FILE)
        self.successResultOf(server.makeDirectory(b"d", {}))
        self.assertStatus(server.openFile(b"d", FXF_WRITE | FXF_CREAT, {}), FX_FAILURE)
        self.assertStatus(server.openFile(b"missing", FXF_READ, {}), FX_NO_SUCH_FILE)
        self.assertStatus(server.openFile(b"d", FXF_READ, {}), FX_FAILURE)
        self.assertEqual(store.objects["alice/f"][0], b"old")

    def test_exclusiveWithoutWrite(self) -> None:
        """
        CREAT|EXCL without WRITE (paramiko's mode C{"x"}) creates a file
        as open(2) does: refused with C{FILE_ALREADY_EXISTS} over an
        existing file, an upload otherwise; READ|CREAT on an existing file
        is a plain download.
        """
        server, store = makeServer()
        self.upload(server, b"f", b"old")
        exclusive = FXF_CREAT | FXF_EXCL
        self.assertStatus(server.openFile(b"f", exclusive, {}), FX_FILE_ALREADY_EXISTS)
        self.assertStatus(server.openFile(b"f", FXF_READ | exclusive, {}), FX_FILE_ALREADY_EXISTS)
        created = self.successResultOf(server.openFile(b"new", exclusive, {}))
        self.successResultOf(created.writeChunk(0, b"made"))
        self.successResultOf(created.close())
        self.assertEqual(store.objects["alice/new"][0], b"made")
        reading = self.successResultOf(server.openFile(b"f", FXF_READ | FXF_CREAT, {}))
        self.assertEqual(self.successResultOf(reading.readChunk(0, 10)), b"old")

    def test_withoutTruncate(self) -> None:
        """
        An existing file opened without TRUNC: writing from its start and
        setting the size written (OpenSSH's C{scp}), or writing at least
        as much as it held, replaces it; a first WRITE at its end appends
        (L{tests.sftp.test_resume}); one in its middle gets
        C{OP_UNSUPPORTED} saying why; overwriting only its start fails at
        CLOSE, since the object cannot keep its old end.
        """
        server, store = makeServer()
        open = FXF_WRITE | FXF_CREAT
        self.upload(server, b"f", b"0123456789")
        f = self.successResultOf(server.openFile(b"f", open, {}))
        e = self.assertStatus(f.writeChunk(4, b"more"), FX_OP_UNSUPPORTED)
        self.assertIn("from its end (10)", e.message)
        self.assertStatus(f.close(), FX_FAILURE)
        f = self.successResultOf(server.openFile(b"f", open, {}))
        self.successResultOf(f.writeChunk(0, b"abc"))
        self.assertStatus(f.close(), FX_FAILURE)
        self.assertEqual(store.objects["alice/f"][0], b"0123456789")
        f = self.successResultOf(server.openFile(b"f", open, {}))
        self.successResultOf(f.writeChunk(0, b"abc"))
        self.successResultOf(f.setAttrs({"size": 3}))
        self.successResultOf(f.close())
        self.assertEqual(store.objects["alice/f"][0], b"abc")
        f = self.successResultOf(server.openFile(b"f", open, {}))
        self.successResultOf(f.writeChunk(0, b"ABCD"))
        self.successResultOf(f.close())
        self.assertEqual(store.objects["alice/f"][0], b"ABCD")
        self.assertEqual(store.uploads, {})

    def test_unsupported(self) -> None:
        """
        Symbolic links and unknown extensions get C{OP_UNSUPPORTED} with a
        reason.
        """
        server, _ = makeServer()
        self.assertStatus(server.readLink(b"a"), FX_OP_UNSUPPORTED)
        self.assertStatus(server.makeLink(b"a", b"b"), FX_OP_UNSUPPORTED)
        self.assertStatus(server.extendedRequest(b"x@y", b""), FX_OP_UNSUPPORTED)

    def test_extensions(self) -> None:
        """
        The VERSION reply announces posix-rename, statvfs, limits and
        check-file (with the algorithms hashes are stored for);
        C{limits@openssh.com} reports the limits the protocol enforces and
        C{statvfs@openssh.com} a large, empty file system.
        """
        server, _ = makeServer()
        announced = server.gotVersion(3, {})
        self.assertEqual(
            set(announced),
            {
                b"posix-rename@openssh.com",
                b"statvfs@openssh.com",
                b"limits@openssh.com",
                b"check-file",
            },
        )
        self.assertEqual(announced[b"check-file"], b"sha256,md5")
        limits = self.successResultOf(server.extendedRequest(b"limits@openssh.com", b""))
        self.assertEqual(
            struct.unpack("!4Q", limits), (MAX_SFTP_MESSAGE, MAX_READ, MAX_WRITE, MAX_HANDLES)
        )
        reply = self.successResultOf(
            server.extendedRequest(b"statvfs@openssh.com", struct.pack("!L", 1) + b"/")
        )
        bsize, frsize, blocks, bfree, bavail, files, ffree, favail, _, _, namemax = struct.unpack(
            "!11Q", reply
        )
        self.assertEqual((bfree, bavail, namemax), (blocks, blocks, 255))
        self.assertGreaterEqual(blocks * frsize, 2**50)
        self.assertStatus(server.extendedRequest(b"statvfs@openssh.com", b"\0"), FX_BAD_MESSAGE)
        self.assertEqual(self.flushLoggedErrors(), [])


class LookupTests(SFTPTestCase):
    """
    How many S3 requests a path lookup costs.
    """

    def test_statRequests(self) -> None:
        """
        C{stat} of a missing name (what a client asks before uploading)
        costs one S3 listing, even when siblings extend the name; a file
        adds a HEAD for its stored time, a directory a listing for its
        marker's time; a file wins over a directory of the same name.
        """
        server, store = makeServer()
        for key in ["alice/d.txt", "alice/d-1", "alice/d/inner", "alice/f", "alice/f/x"]:
            store.objects[key] = (b"abc", 7)
        for path, mode, calls in [
            (b"d", MODE_DIR, ["listDirectory", "listDirectory"]),
            (b"d.txt", MODE_FILE, ["listDirectory", "headObject"]),
            (b"f", MODE_FILE, ["listDirectory", "headObject"]),
        ]:
            store.calls.clear()
            attrs = self.successResultOf(server.getAttrs(path, True))
            self.assertEqual(attrs["permissions"], mode, path)
            self.assertEqual(store.calls, calls)
        store.calls.clear()
        self.assertStatus(server.getAttrs(b"nothing", True), FX_NO_SUCH_FILE)
        self.assertEqual(store.calls, ["listDirectory"])

    def test_statManySiblings(self) -> None:
        """
        When more names than one listing page sort between a directory's
        name and its C{name/} prefix, C{stat} still finds the directory.
        """
        server, store = makeServer()
        for i in range(1005):
            store.objects[f"alice/d.{i:04d}"] = (b"", 0)
        store.objects["alice/d/inner"] = (b"", 0)
        attrs = self.successResultOf(server.getAttrs(b"d", True))
        self.assertEqual(attrs["permissions"], MODE_DIR)
        self.assertStatus(server.getAttrs(b"e", True), FX_NO_SUCH_FILE)

    def test_unexpectedErrorIsSafe(self) -> None:
        """
        An unexpected exception becomes C{FX_FAILURE} with a generic
        message and is logged with its traceback.
        """
        server, store = makeServer()
        store.failNext("listDirectory", RuntimeError("secret internals"))
        e = self.assertStatus(server.getAttrs(b"x", True), FX_FAILURE)
        self.assertNotIn("secret", e.message)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_badPath(self) -> None:
        """
        A path with NUL gets a clear status, not a failure of the server.
        """
        server, _ = makeServer()
        e = self.failureResultOf(server.openFile(b"a\x00b", WRITE, {}), SFTPError).value
        self.assertIn("NUL", e.message)
