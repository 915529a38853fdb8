"""
Tests for L{twisted_s3sftp.sftp}: the SFTP operations over an in-memory
store.
"""

from __future__ import annotations

from typing import Any

from twisted.conch.interfaces import ISFTPFile, ISFTPServer
from twisted.conch.ssh.filetransfer import (
    FX_FAILURE,
    FX_NO_SUCH_FILE,
    FX_OP_UNSUPPORTED,
    FXF_APPEND,
    FXF_CREAT,
    FXF_READ,
    FXF_TRUNC,
    FXF_WRITE,
    SFTPError,
)
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from twisted_s3sftp.interfaces import IObjectStore
from twisted_s3sftp.memory import MemoryObjectStore
from twisted_s3sftp.sftp import UploadFile
from twisted_s3sftp.ssh import S3User
from twisted_s3sftp.upload import MIN_PART_SIZE

PART = MIN_PART_SIZE
WRITE = FXF_WRITE | FXF_CREAT | FXF_TRUNC


def makeServer(store: MemoryObjectStore | None = None) -> tuple[Any, MemoryObjectStore]:
    """
    @return: the C{ISFTPServer} of user C{alice} and its store.
    """
    store = store or MemoryObjectStore()
    user = S3User("alice", "alice/", store, PART, Clock())
    return ISFTPServer(user), store


class SFTPTestCase(SynchronousTestCase):
    """
    Helpers for driving L{ISFTPServer} operations synchronously.
    """

    def assertStatus(self, d: Deferred[Any], code: int) -> SFTPError:
        """
        Assert C{d} failed with an SFTP status C{code} and an ASCII
        message.
        """
        error = self.failureResultOf(d, SFTPError).value
        self.assertEqual(error.code, code, error.message)
        error.message.encode("ascii")
        return error

    def upload(self, server: Any, path: bytes, data: bytes, chunk: int = 32768) -> UploadFile:
        """
        Upload C{data} to C{path} in C{chunk}-byte writes and close it.
        """
        f = self.successResultOf(server.openFile(path, WRITE, {}))
        for offset in range(0, len(data), chunk):
            self.successResultOf(f.writeChunk(offset, data[offset : offset + chunk]))
        self.successResultOf(f.close())
        return f


class UploadTests(SFTPTestCase):
    """
    Uploads become objects only at a successful CLOSE.
    """

    def test_interfaces(self) -> None:
        """
        The server, its files and both stores provide their interfaces.
        """
        server, store = makeServer()
        self.assertTrue(verifyObject(ISFTPServer, server))
        self.assertTrue(verifyObject(IObjectStore, store))
        f = self.successResultOf(server.openFile(b"x", WRITE, {}))
        self.assertTrue(verifyObject(ISFTPFile, f))
        self.assertEqual(hash(f), hash(f))

    def test_small(self) -> None:
        """
        A file no larger than a part is one PutObject at CLOSE and nothing
        before it.
        """
        server, store = makeServer()
        f = self.successResultOf(server.openFile(b"/dir/a.txt", WRITE, {}))
        self.successResultOf(f.writeChunk(0, b"hello "))
        self.successResultOf(f.writeChunk(6, b"world"))
        self.assertEqual(store.objects, {})
        self.successResultOf(f.close())
        self.assertEqual(store.objects["alice/dir/a.txt"][0], b"hello world")
        self.assertEqual(store.calls, ["putObject"])

    def test_empty(self) -> None:
        """
        An empty file is a zero-byte object.
        """
        server, store = makeServer()
        self.upload(server, b"empty", b"")
        self.assertEqual(store.objects["alice/empty"][0], b"")

    def test_multipart(self) -> None:
        """
        A file larger than a part is a multipart upload whose parts are
        sent while the client is still writing, completed at CLOSE.
        """
        server, store = makeServer()
        data = bytes(range(256)) * ((3 * PART + 7) // 256) + b"tail"
        f = self.successResultOf(server.openFile(b"big", WRITE, {}))
        for offset in range(0, len(data), 65536):
            self.successResultOf(f.writeChunk(offset, data[offset : offset + 65536]))
        self.assertEqual(store.calls.count("uploadPart"), 3)
        self.assertEqual(store.objects, {})
        self.successResultOf(f.close())
        self.assertEqual(store.objects["alice/big"][0], data)
        self.assertEqual(store.uploads, {})

    def test_partFailureReportedOnWrite(self) -> None:
        """
        When S3 fails a part, the next WRITE fails, the multipart upload is
        aborted, and the CLOSE that follows fails too: no object.
        """
        server, store = makeServer()
        store.failNext("uploadPart")
        store.holding.add("uploadPart")
        f = self.successResultOf(server.openFile(b"big", WRITE, {}))
        data = b"z" * (PART + 1)
        self.successResultOf(f.writeChunk(0, data))
        store.release()
        e = self.assertStatus(f.writeChunk(len(data), b"more"), FX_FAILURE)
        self.assertIn("upload failed", e.message)
        self.assertStatus(f.close(), FX_FAILURE)
        self.assertEqual(store.objects, {})
        self.assertEqual(store.uploads, {})
        self.assertIn("abortMultipartUpload", store.calls)

    def test_putFailureAtClose(self) -> None:
        """
        When S3 refuses the PutObject of a small file, CLOSE fails.
        """
        server, store = makeServer()
        store.failNext("putObject")
        f = self.successResultOf(server.openFile(b"a", WRITE, {}))
        self.successResultOf(f.writeChunk(0, b"abc"))
        self.assertStatus(f.close(), FX_FAILURE)
        self.assertEqual(store.objects, {})

    def test_completeFailure(self) -> None:
        """
        When S3 fails CompleteMultipartUpload, CLOSE fails and the upload
        is aborted.
        """
        server, store = makeServer()
        store.failNext("completeMultipartUpload")
        f = self.successResultOf(server.openFile(b"a", WRITE, {}))
        self.successResultOf(f.writeChunk(0, b"q" * (PART + 5)))
        self.assertStatus(f.close(), FX_FAILURE)
        self.assertEqual(store.objects, {})
        self.assertEqual(store.uploads, {})

    def test_nonSequentialWrite(self) -> None:
        """
        A write at the wrong offset fails with C{OP_UNSUPPORTED}, aborts
        the upload, and CLOSE then fails.
        """
        server, store = makeServer()
        f = self.successResultOf(server.openFile(b"a", WRITE, {}))
        self.successResultOf(f.writeChunk(0, b"q" * (PART + 5)))
        self.assertStatus(f.writeChunk(7, b"x"), FX_OP_UNSUPPORTED)
        self.assertStatus(f.close(), FX_FAILURE)
        self.assertEqual(store.objects, {})
        self.assertEqual(store.uploads, {})

    def test_abortIdempotent(self) -> None:
        """
        Aborting twice aborts once; CLOSE after abort fails.
        """
        server, store = makeServer()
        f = self.successResultOf(server.openFile(b"a", WRITE, {}))
        self.successResultOf(f.writeChunk(0, b"q" * (PART + 5)))
        self.successResultOf(f.abort())
        self.successResultOf(f.abort())
        self.assertEqual(store.calls.count("abortMultipartUpload"), 1)
        self.assertStatus(f.close(), FX_FAILURE)
        self.assertEqual(store.objects, {})

    def test_abortWhilePartInFlight(self) -> None:
        """
        An abort while a part is still being stored waits for it, then
        aborts the multipart upload: nothing is left behind.
        """
        server, store = makeServer()
        store.holding.add("uploadPart")
        f = self.successResultOf(server.openFile(b"a", WRITE, {}))
        self.successResultOf(f.writeChunk(0, b"q" * (PART + 5)))
        aborted = f.abort()
        self.assertNoResult(aborted)
        store.release()
        self.successResultOf(aborted)
        self.assertEqual(store.uploads, {})
        self.assertEqual(store.objects, {})

    def test_abortAfterCloseIsNoop(self) -> None:
        """
        Aborting a file that was stored leaves the object alone.
        """
        server, store = makeServer()
        f = self.upload(server, b"a", b"data")
        self.successResultOf(f.abort())
        self.assertEqual(store.objects["alice/a"][0], b"data")

    def test_secondCloseRefused(self) -> None:
        """
        A second CLOSE, or a WRITE, while the first CLOSE is storing the
        object fails, and the first CLOSE still succeeds with the data
        written before it.
        """
        server, store = makeServer()
        store.holding.add("putObject")
        f = self.successResultOf(server.openFile(b"a", WRITE, {}))
        self.successResultOf(f.writeChunk(0, b"abc"))
        first = f.close()
        self.assertStatus(f.close(), FX_FAILURE)
        self.assertStatus(f.writeChunk(3, b"late"), FX_FAILURE)
        store.release()
        self.successResultOf(first)
        self.assertEqual(store.objects["alice/a"][0], b"abc")

    def test_openModes(self) -> None:
        """
        Reading and appending are refused with C{OP_UNSUPPORTED}; reading
        from a file open for writing is refused.
        """
        server, store = makeServer()
        self.assertStatus(server.openFile(b"a", FXF_READ, {}), FX_OP_UNSUPPORTED)
        self.assertStatus(server.openFile(b"a", WRITE | FXF_APPEND, {}), FX_OP_UNSUPPORTED)
        f = self.successResultOf(server.openFile(b"a", WRITE | FXF_READ, {}))
        self.assertStatus(f.readChunk(0, 10), FX_OP_UNSUPPORTED)

    def test_fstatDuringUpload(self) -> None:
        """
        C{fstat} of a file being uploaded reports the bytes received.
        """
        server, store = makeServer()
        f = self.successResultOf(server.openFile(b"a", WRITE, {}))
        self.successResultOf(f.writeChunk(0, b"12345"))
        self.assertEqual(self.successResultOf(f.getAttrs())["size"], 5)
        self.successResultOf(f.setAttrs({"permissions": 0o600}))


class NamespaceTests(SFTPTestCase):
    """
    Enough of realpath, stat, opendir, mkdir and remove for uploads.
    """

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
        Files report size and a regular-file mode, directories (markers or
        prefixes) a directory mode; listings show both; missing paths get
        C{NO_SUCH_FILE}.
        """
        server, store = makeServer()
        self.successResultOf(server.makeDirectory(b"empty", {}))
        self.upload(server, b"sub/f", b"12345")
        self.upload(server, b"top", b"xy")
        store.objects["bob/private"] = (b"no", 0)
        attrs = self.successResultOf(server.getAttrs(b"sub/f", True))
        self.assertEqual((attrs["size"], attrs["permissions"]), (5, 0o100644))
        for d in [b"/", b"sub", b"empty"]:
            attrs = self.successResultOf(server.getAttrs(d, True))
            self.assertEqual(attrs["permissions"], 0o040755, d)
        self.assertStatus(server.getAttrs(b"nope", True), FX_NO_SUCH_FILE)
        listing = self.successResultOf(server.openDirectory(b"/"))
        names = [(name, attrs["permissions"]) for name, _, attrs in listing]
        self.assertEqual(
            names, [(b"empty", 0o040755), (b"sub", 0o040755), (b"top", 0o100644)]
        )
        longNames = [long for _, long, _ in listing]
        self.assertTrue(longNames[2].startswith(b"-rw-r--r--"))
        self.assertTrue(longNames[2].endswith(b" top"))
        self.assertEqual([n for n, _, _ in self.successResultOf(server.openDirectory(b"empty"))], [])
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

    def test_mkdir(self) -> None:
        """
        C{mkdir} writes a C{dir/} marker; making it again, or over a file,
        fails.
        """
        server, store = makeServer()
        self.successResultOf(server.makeDirectory(b"d", {}))
        self.assertEqual(store.objects["alice/d/"][0], b"")
        self.assertStatus(server.makeDirectory(b"d", {}), FX_FAILURE)
        self.upload(server, b"f", b"1")
        self.assertStatus(server.makeDirectory(b"f", {}), FX_FAILURE)

    def test_remove(self) -> None:
        """
        C{remove} deletes an object; a missing one is C{NO_SUCH_FILE}.
        """
        server, store = makeServer()
        self.upload(server, b"f", b"1")
        self.successResultOf(server.removeFile(b"f"))
        self.assertEqual(store.objects, {})
        self.assertStatus(server.removeFile(b"f"), FX_NO_SUCH_FILE)

    def test_unsupported(self) -> None:
        """
        Operations left for later answer C{OP_UNSUPPORTED} with a reason.
        """
        server, _ = makeServer()
        self.assertStatus(server.renameFile(b"a", b"b"), FX_OP_UNSUPPORTED)
        self.assertStatus(server.removeDirectory(b"a"), FX_OP_UNSUPPORTED)
        self.assertStatus(server.readLink(b"a"), FX_OP_UNSUPPORTED)
        self.assertStatus(server.makeLink(b"a", b"b"), FX_OP_UNSUPPORTED)
        self.assertStatus(server.extendedRequest(b"x@y", b""), FX_OP_UNSUPPORTED)
        self.successResultOf(server.setAttrs(b"a", {"mtime": 1, "atime": 1}))

    def test_unexpectedErrorIsSafe(self) -> None:
        """
        An unexpected exception becomes C{FX_FAILURE} with a generic
        message and is logged with its traceback.
        """
        server, store = makeServer()
        store.failNext("headObject", RuntimeError("secret internals"))
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
