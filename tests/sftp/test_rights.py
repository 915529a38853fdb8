"""
Tests for L{twisted_s3sftp.sftp.rights} and its enforcement in
L{twisted_s3sftp.sftp.server}: what each right guards, over an in-memory
store.
"""

from __future__ import annotations

from typing import Any

from twisted.conch.interfaces import ISFTPServer
from twisted.conch.ssh.filetransfer import (
    FX_FAILURE,
    FX_NO_SUCH_FILE,
    FX_PERMISSION_DENIED,
    FXF_READ,
)
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher

from twisted_s3sftp.errors import FX_FILE_ALREADY_EXISTS
from twisted_s3sftp.sftp.flow import MemoryLimit
from twisted_s3sftp.sftp.rights import ALL_RIGHTS, OWN_FILES, PRESETS, OwnFiles, Rights
from twisted_s3sftp.sftp.upload import ActiveUploads
from twisted_s3sftp.ssh.session import S3User
from twisted_s3sftp.store.interfaces import ObjectSettings
from twisted_s3sftp.store.memory import MemoryObjectStore
from twisted_s3sftp.store.parts import MiB

from .test_server import POLICY, WRITE, SFTPTestCase

#: The S3 settings of the users L{makeServer} makes, unless told otherwise.
SETTINGS = ObjectSettings("STANDARD_IA", "AES256", None, [("team", "ops")])


def makeServer(
    granted: frozenset[str] | set[str],
    store: MemoryObjectStore | None = None,
    settings: ObjectSettings = SETTINGS,
    uploads: ActiveUploads | None = None,
    **rights: Any,
) -> tuple[Any, MemoryObjectStore, S3User]:
    """
    @param uploads: the uploads under way, to share them with another
        server.
    @return: the C{ISFTPServer} of user C{alice} with C{granted} rights,
        its store and its avatar.
    """
    store = store or MemoryObjectStore()
    user = S3User(
        "alice",
        "alice/",
        store,
        POLICY,
        MemoryLimit(1024 * MiB),
        Clock(),
        uploads,
        rights=Rights(frozenset(granted), **rights),
        settings=settings,
    )
    return ISFTPServer(user), store, user


class RightsTests(SFTPTestCase):
    """
    Each operation needs its right, and says which one is missing.
    """

    def setUp(self) -> None:
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def seeded(self, granted: set[str] | frozenset[str]) -> tuple[Any, MemoryObjectStore]:
        """
        @return: a server with C{granted}, over a store holding
            C{alice/theirs} (someone else's) and the directory C{alice/d/}.
        """
        store = MemoryObjectStore()
        store.objects["alice/theirs"] = (b"data", 0)
        store.objects["alice/d/"] = (b"", 0)
        server, _, _ = makeServer(granted, store)
        return server, store

    def operations(self, server: Any) -> dict[str, Any]:
        """
        @return: one operation per right, each on C{theirs} or C{d}.
        """
        return {
            "list": lambda: server.getAttrs(b"theirs", True),
            "download": lambda: server.openFile(b"theirs", FXF_READ, {}),
            "upload": lambda: server.openFile(b"new", WRITE, {}),
            "overwrite": lambda: server.openFile(b"theirs", WRITE, {}),
            "delete": lambda: server.removeFile(b"theirs"),
            "rename": lambda: server.renameFile(b"theirs", b"moved"),
            "mkdir": lambda: server.makeDirectory(b"made", {}),
        }

    def test_eachRight(self) -> None:
        """
        Without one right, exactly the operation it guards is refused with
        C{PERMISSION_DENIED} naming it, and audited (without C{upload},
        writing over a file too); with it, it runs.
        """
        for missing in ALL_RIGHTS:
            for right in ALL_RIGHTS:
                server, _ = self.seeded(set(ALL_RIGHTS) - {missing})
                d = self.operations(server)[right]()
                # Writing over a file needs the upload right as well.
                if right == missing or (right, missing) == ("overwrite", "upload"):
                    error = self.assertStatus(d, FX_PERMISSION_DENIED)
                    self.assertIn(f"needs the {missing!r} right", error.message)
                else:
                    self.successResultOf(d)
        denied = [e for e in self.events if e.get("audit") == "denied"]
        self.assertEqual(
            [e["right"] for e in denied],
            ["list", "download", "upload", "upload", "overwrite", "delete", "rename", "mkdir"],
        )
        self.assertEqual(
            formatEvent(denied[0]),
            "denied: alice the status of a file /theirs: the 'list' right is missing",
        )

    def test_always(self) -> None:
        """
        With no right at all, C{realpath}, a directory's C{stat} and the
        extensions still answer; a file's C{stat} is refused, a missing
        one is not found.
        """
        server, _ = self.seeded(set())
        self.assertEqual(self.successResultOf(server.realPath(b".")), b"/")
        self.successResultOf(server.getAttrs(b"/", True))
        self.successResultOf(server.getAttrs(b"d", True))
        self.successResultOf(server.extendedRequest(b"limits@openssh.com", b""))
        self.assertStatus(server.getAttrs(b"theirs", True), FX_PERMISSION_DENIED)
        self.assertStatus(server.getAttrs(b"nothing", True), FX_NO_SUCH_FILE)

    def test_dropBox(self) -> None:
        """
        A drop box uploads a new name and then, on its own file, stats it,
        sets its time and renames it to a free name; the listing shows only
        its own files; it may not rename onto an existing name.
        """
        server, store = self.seeded(PRESETS["drop-box"])
        self.upload(server, b"up.filepart", b"hello")
        self.assertEqual(store.metadata["alice/up.filepart"]["uploader"], "alice")
        self.assertEqual(self.successResultOf(server.getAttrs(b"up.filepart", True))["size"], 5)
        self.successResultOf(server.setAttrs(b"up.filepart", {"atime": 7, "mtime": 7}))
        self.successResultOf(server.renameFile(b"up.filepart", b"up"))
        self.assertEqual(self.successResultOf(server.getAttrs(b"up", True))["mtime"], 7)
        listing = self.successResultOf(server.openDirectory(b"/"))
        entries = self.successResultOf(listing.readBatch())
        self.assertEqual([name for name, _, _ in entries], [b"up"])
        self.assertEqual(entries[0][2]["mtime"], 7)
        self.upload(server, b"other", b"x")
        self.assertStatus(server.posixRename(b"other", b"up"), FX_PERMISSION_DENIED)
        self.assertStatus(server.renameFile(b"other", b"theirs"), FX_FAILURE)
        self.assertStatus(server.setAttrs(b"theirs", {"mtime": 9}), FX_PERMISSION_DENIED)
        # A SETSTAT of someone else's file answers nothing about its size.
        for size in (4, 5):
            self.assertStatus(server.setAttrs(b"theirs", {"size": size}), FX_PERMISSION_DENIED)
        store.calls.clear()
        self.successResultOf(server.openDirectory(b"/"))
        self.assertNotIn("listDirectory", store.calls)

    def test_overwrittenIsNotOwn(self) -> None:
        """
        A file the user stored, then someone else stored over, is no longer
        theirs to stat, time or rename.
        """
        server, store, _ = makeServer(PRESETS["drop-box"])
        self.upload(server, b"x", b"mine")
        store.metadata["alice/x"] = {"uploader": "bob"}
        self.assertStatus(server.getAttrs(b"x", True), FX_PERMISSION_DENIED)
        self.assertStatus(server.setAttrs(b"x", {"mtime": 5}), FX_PERMISSION_DENIED)
        self.assertStatus(server.renameFile(b"x", b"y"), FX_PERMISSION_DENIED)

    def test_narrowedKeepsNoAllowance(self) -> None:
        """
        A user who stored a file, and logs in later without the upload
        right, has no own-file allowance on it: no status, no time, no
        rename.
        """
        store = MemoryObjectStore()
        first, _, _ = makeServer(PRESETS["drop-box"], store)
        self.upload(first, b"f", b"data")
        for granted in (set(), {"download"}):
            later, _, _ = makeServer(granted, store)
            self.assertStatus(later.getAttrs(b"f", True), FX_PERMISSION_DENIED)
            self.assertStatus(later.setAttrs(b"f", {"mtime": 5}), FX_PERMISSION_DENIED)
            self.assertStatus(later.renameFile(b"f", b"g"), FX_PERMISSION_DENIED)
        self.assertIn("alice/f", store.objects)

    def test_replacingNeedsUpload(self) -> None:
        """
        Replacing a file by C{posix-rename}, or changing an upload under
        way, needs the upload right as well as overwrite.
        """
        server, seededStore = self.seeded({"list", "overwrite", "rename"})
        seededStore.objects["alice/other"] = (b"x", 0)
        self.assertStatus(server.posixRename(b"other", b"theirs"), FX_PERMISSION_DENIED)
        store = MemoryObjectStore()
        uploader, _, _ = makeServer(set(ALL_RIGHTS), store)
        self.successResultOf(uploader.openFile(b"busy", WRITE, {}))
        other, _, _ = makeServer({"list", "overwrite"}, store, uploads=uploader.avatar.uploads)
        error = self.assertStatus(other.setAttrs(b"busy", {"mtime": 1}), FX_PERMISSION_DENIED)
        self.assertIn("'upload'", error.message)

    def test_timesNeedUpload(self) -> None:
        """
        Setting the times of someone else's object rewrites it: with
        C{overwrite} alone (no C{upload}) it is refused.
        """
        server, _ = self.seeded({"overwrite", "list"})
        error = self.assertStatus(server.setAttrs(b"theirs", {"mtime": 9}), FX_PERMISSION_DENIED)
        self.assertIn("'upload'", error.message)

    def test_renameAtomic(self) -> None:
        """
        A rename to a free name is copied only while the name is free: a
        file stored there meanwhile stays, and the rename fails.
        """
        server, store = self.seeded(set(ALL_RIGHTS))
        store.holding.add("copyObject")
        d = server.renameFile(b"theirs", b"free")
        store.objects["alice/free"] = (b"raced", 0)
        store.release()
        error = self.assertStatus(d, FX_FILE_ALREADY_EXISTS)
        self.assertIn("already exists", error.message)
        self.assertEqual(store.objects["alice/free"][0], b"raced")
        self.assertEqual(store.objects["alice/theirs"][0], b"data")

    def test_archiveClass(self) -> None:
        """
        With an archive class, a multipart upload is created in the
        standard class and given the archive class by the copy that
        records its SHA-256 (S3 cannot copy an archived object).
        """
        server, store, _ = makeServer(
            set(ALL_RIGHTS), settings=ObjectSettings("DEEP_ARCHIVE", "AES256")
        )
        f = self.successResultOf(server.openFile(b"big", WRITE, {}))
        for offset in range(0, 12 * MiB, MiB):
            self.successResultOf(f.writeChunk(offset, b"z" * MiB))
        [created] = store.uploadSettings.values()
        self.assertEqual(created, ObjectSettings(None, "AES256"))
        self.successResultOf(f.close())
        self.assertEqual(store.settings["alice/big"], ObjectSettings("DEEP_ARCHIVE", "AES256"))
        self.upload(server, b"small", b"z")
        self.assertEqual(store.settings["alice/small"].storageClass, "DEEP_ARCHIVE")

    def test_otherConnection(self) -> None:
        """
        A file the user uploaded over another connection is theirs too:
        its metadata names them.
        """
        store = MemoryObjectStore()
        first, _, _ = makeServer(PRESETS["drop-box"], store)
        self.upload(first, b"f", b"data")
        second, _, _ = makeServer(PRESETS["drop-box"], store)
        self.successResultOf(second.getAttrs(b"f", True))
        self.successResultOf(second.setAttrs(b"f", {"atime": 3, "mtime": 3}))
        self.successResultOf(second.renameFile(b"f", b"g"))
        listing = self.successResultOf(second.openDirectory(b"/"))
        self.assertEqual([e[0] for e in self.successResultOf(listing.readBatch())], [b"g"])

    def test_noOverwriteAtomic(self) -> None:
        """
        Without C{overwrite}, the upload is stored only where no object is
        (the store is asked for an exclusive write): a file stored by
        someone else meanwhile fails the CLOSE and stays.
        """
        server, store, _ = makeServer(PRESETS["drop-box"])
        f = self.successResultOf(server.openFile(b"race", WRITE, {}))
        self.successResultOf(f.writeChunk(0, b"mine"))
        store.objects["alice/race"] = (b"theirs", 0)
        error = self.assertStatus(f.close(), FX_FAILURE)
        self.assertIn("a file with that name already exists", error.message)
        self.assertEqual(store.objects["alice/race"][0], b"theirs")
        big = self.successResultOf(server.openFile(b"big", WRITE, {}))
        for offset in range(0, 12 * MiB, MiB):
            self.successResultOf(big.writeChunk(offset, b"x" * MiB))
        store.objects["alice/big"] = (b"theirs", 0)
        self.assertStatus(big.close(), FX_FAILURE)
        self.assertEqual(store.objects["alice/big"][0], b"theirs")
        self.assertEqual(store.uploads, {})

    def test_maxFileSize(self) -> None:
        """
        The write that takes a file past C{maxFileSize} fails and the
        upload is aborted; a file of exactly that size is stored.
        """
        server, store, _ = makeServer(set(ALL_RIGHTS), maxFileSize=10)
        self.upload(server, b"ten", b"x" * 10)
        f = self.successResultOf(server.openFile(b"eleven", WRITE, {}))
        self.successResultOf(f.writeChunk(0, b"x" * 8))
        error = self.assertStatus(f.writeChunk(8, b"x" * 3), FX_FAILURE)
        self.assertIn("file too large", error.message)
        self.assertStatus(f.close(), FX_FAILURE)
        self.assertNotIn("alice/eleven", store.objects)

    def test_settings(self) -> None:
        """
        Uploads are stored with the user's S3 settings; a rename's copy
        keeps its source's.
        """
        server, store, _ = makeServer(set(ALL_RIGHTS))
        self.upload(server, b"small", b"x")
        self.assertEqual(store.settings["alice/small"].storageClass, "STANDARD_IA")
        self.assertEqual(store.settings["alice/small"].tags, (("team", "ops"),))
        store.objects["alice/old"] = (b"y", 0)
        store.settings["alice/old"] = ObjectSettings("GLACIER_IR", None, None, [("a", "b")])
        self.successResultOf(server.renameFile(b"old", b"new"))
        self.assertEqual(
            store.settings["alice/new"], ObjectSettings("GLACIER_IR", None, None, [("a", "b")])
        )
        self.successResultOf(server.makeDirectory(b"dir", {}))
        self.assertEqual(store.settings["alice/dir/"].storageClass, None)
        self.assertEqual(store.settings["alice/dir/"].sse, "AES256")


class OwnFilesTests(SFTPTestCase):
    """
    L{OwnFiles} is bounded and forgets what is removed.
    """

    def test_bounded(self) -> None:
        """
        At most L{OWN_FILES} keys are kept, the oldest forgotten first.
        """
        own = OwnFiles()
        for number in range(OWN_FILES + 5):
            own.add(f"k{number}", {"size": number})
        self.assertNotIn("k4", own)
        self.assertIn("k5", own)
        self.assertEqual(own.discard("k5"), {"size": 5})
        self.assertIsNone(own.discard("k5"))
        self.assertEqual(len(own.under("k")), OWN_FILES - 1)
        own.add("d/a", {})
        own.add("d/b/c", {})
        self.assertEqual(own.under("d/"), [("a", {})])

    def test_describe(self) -> None:
        """
        Rights are described by preset name where they are one.
        """
        self.assertEqual(Rights().describe(), "read-write")
        self.assertEqual(Rights(PRESETS["read-only"]).describe(), "read-only")
        self.assertEqual(Rights(frozenset({"upload", "mkdir"})).describe(), "upload,mkdir")
        narrowed = Rights(maxFileSize=5).narrowed(Rights(PRESETS["drop-box"], 3))
        self.assertEqual(narrowed, Rights(PRESETS["drop-box"], 3))
