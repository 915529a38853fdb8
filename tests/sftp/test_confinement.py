"""
Confinement, table-driven at the SFTP packet level: every operation, fed
hostile names as raw bytes (not through a client that would normalise
them), touches only keys in the user's home, and names that cannot be
valid are refused before any S3 call.
"""

from __future__ import annotations

import struct
from typing import Any

from twisted.conch.ssh.common import NS, getNS
from twisted.conch.ssh.filetransfer import (
    FX_BAD_MESSAGE,
    FX_OP_UNSUPPORTED,
    FXF_CREAT,
    FXF_READ,
    FXF_TRUNC,
    FXF_WRITE,
    FXP_ATTRS,
    FXP_CLOSE,
    FXP_EXTENDED,
    FXP_HANDLE,
    FXP_LSTAT,
    FXP_MKDIR,
    FXP_NAME,
    FXP_OPEN,
    FXP_OPENDIR,
    FXP_READDIR,
    FXP_READLINK,
    FXP_REALPATH,
    FXP_REMOVE,
    FXP_RENAME,
    FXP_RMDIR,
    FXP_SETSTAT,
    FXP_STAT,
    FXP_STATUS,
    FXP_SYMLINK,
)
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from tests.sftp.test_protocol import sftpMessage, sftpReplies
from twisted_s3sftp.sftp.flow import MemoryLimit
from twisted_s3sftp.sftp.paths import normalise
from twisted_s3sftp.sftp.protocol import S3FileTransferServer
from twisted_s3sftp.ssh.session import S3User
from twisted_s3sftp.store.memory import MemoryObjectStore
from twisted_s3sftp.store.parts import MiB, UploadPolicy

#: The home the user under test is confined to.
HOME = "users/alice/"

#: Names that try to leave the home, or to be something they are not.
#: Each must stay inside the home or be refused.
HOSTILE = [
    b"../bob/x",
    b"/../../x",
    b"a/./b/../../../bob",
    b"../bob/secret",
    b"../../secret-at-root",
    b"/../bob/secret",
    b"/../../..",
    b"./../bob/x",
    b"..",
    b".",
    b"/",
    b"",
    b"//",
    b"//bob",
    b"///bob/x",
    b"/./././x",
    b"a/./b/../../../bob/x",
    b"../alice2/secret",
    b"/../alice2/x",
    b"..\\bob\\secret",
    b"\\..\\..\\bob\\secret",
    b"..\\/bob/secret",
    b"C:\\Windows\\x",
    b"\\\\server\\share\\x",
    b"...",
    b"..hidden",
    b"a..b",
    b"/etc/passwd",
    b"/users/bob/secret",
    b"users/alice/../bob/secret",
    b"~",
    b"~/x",
    b"~bob/secret",
    b"/~2/foo",
    b"%2e%2e%2fbob%2fsecret",
    "‥／bob／secret".encode(),
    "．．/bob".encode(),
    "﹒﹒∕bob".encode(),
    "․․/bob".encode(),
    "e\u0301".encode(),
    b"file/",
    b"a" * (1024 - len(HOME)),
]

#: Names that can never be valid: refused before any S3 call.
INVALID = [
    b"a\x00b",
    b"x\x00/../../bob/secret",
    b"\x01",
    b"tab\there",
    b"line\r\nbreak",
    b"\x1b[31mred",
    b"del\x7f",
    "c1\u0085".encode(),
    b"\xff",
    b"..\xc0\xaf..\xc0\xafbob",
    b"\xed\xa0\x80",
    b"a" * (1024 - len(HOME) + 1),
    "é".encode() * 600,
    b"x" * 65536,
    b"a/" * 10000,
]


class RecordingStore(MemoryObjectStore):
    """
    An in-memory store that records every key and prefix it is asked
    about.
    """

    touched: list[str]

    def _record(self, *keys: str) -> None:
        self.touched.extend(keys)

    def headObject(self, key: str) -> Any:
        self._record(key)
        return super().headObject(key)

    def listDirectory(
        self, prefix: str, limit: int, token: str | None = None, startAfter: str | None = None
    ) -> Any:
        self._record(prefix)
        if startAfter is not None:
            self._record(startAfter)
        return super().listDirectory(prefix, limit, token, startAfter)

    def getObject(self, key: str, *args: Any) -> Any:
        self._record(key)
        return super().getObject(key, *args)

    def putObject(self, key: str, *args: Any) -> Any:
        self._record(key)
        return super().putObject(key, *args)

    def createMultipartUpload(self, key: str) -> Any:
        self._record(key)
        return super().createMultipartUpload(key)

    def copyObject(self, source: str, destination: str, *args: Any) -> Any:
        self._record(source, destination)
        return super().copyObject(source, destination, *args)

    def deleteObject(self, key: str) -> Any:
        self._record(key)
        return super().deleteObject(key)


class ConfinementTests(SynchronousTestCase):
    """
    Every operation, every hostile name, raw packets.
    """

    def setUp(self) -> None:
        self.store = RecordingStore()
        self.store.touched = []
        for key in (
            "users/bob/secret",
            "users/alice2/secret",
            "secret-at-root",
            "users/alice/inside",
            "users/alice/dir/",
        ):
            self.store.objects[key] = (b"not yours", 0)
        user = S3User(
            "alice",
            HOME,
            self.store,
            UploadPolicy(partSize=5 * MiB, bufferLimit=16 * MiB, concurrency=2),
            MemoryLimit(256 * MiB),
            Clock(),
        )
        self.server = S3FileTransferServer(avatar=user)
        self.transport = StringTransport()
        self.server.makeConnection(self.transport)
        self.server.dataReceived(sftpMessage(1, 3, b""))
        self.transport.clear()
        self.requestId = 100

    def request(self, kind: int, payload: bytes) -> list[tuple[int, int, bytes]]:
        """
        Send one request and return the replies to it.
        """
        self.requestId += 1
        self.server.dataReceived(sftpMessage(kind, self.requestId, payload))
        replies = sftpReplies(self.transport.value())
        self.transport.clear()
        return replies

    def operations(self, name: bytes) -> list[tuple[str, int, bytes]]:
        """
        @return: C{(label, type, payload)} of every request naming C{name}.
        """
        attrs = struct.pack("!L", 0)
        mtime = struct.pack("!LLL", 0x08, 1_600_000_000, 1_600_000_000)
        return [
            (
                "open-write",
                FXP_OPEN,
                NS(name) + struct.pack("!L", FXF_WRITE | FXF_CREAT | FXF_TRUNC) + attrs,
            ),
            ("open-read", FXP_OPEN, NS(name) + struct.pack("!L", FXF_READ) + attrs),
            ("stat", FXP_STAT, NS(name)),
            ("lstat", FXP_LSTAT, NS(name)),
            ("opendir", FXP_OPENDIR, NS(name)),
            ("realpath", FXP_REALPATH, NS(name)),
            ("remove", FXP_REMOVE, NS(name)),
            ("rename-from", FXP_RENAME, NS(name) + NS(b"landed")),
            ("rename-to", FXP_RENAME, NS(b"inside") + NS(name)),
            (
                "posix-rename-to",
                FXP_EXTENDED,
                NS(b"posix-rename@openssh.com") + NS(b"dir2") + NS(name),
            ),
            ("mkdir", FXP_MKDIR, NS(name) + attrs),
            ("rmdir", FXP_RMDIR, NS(name)),
            ("setstat", FXP_SETSTAT, NS(name) + mtime),
            ("readlink", FXP_READLINK, NS(name)),
            ("symlink", FXP_SYMLINK, NS(name) + NS(b"inside")),
        ]

    def assertConfined(
        self, name: bytes, label: str, replies: list[tuple[int, int, bytes]]
    ) -> None:
        """
        Exactly one reply; every key touched so far is in the home; a
        handle is closed again and the CLOSE answered.
        """
        self.assertEqual(len(replies), 1, (name, label, replies))
        kind, requestId, payload = replies[0]
        self.assertEqual(requestId, self.requestId)
        outside = [key for key in self.store.touched if not key.startswith(HOME)]
        self.assertEqual(outside, [], (name, label))
        if kind == FXP_HANDLE:
            handle, _ = getNS(payload)
            if label == "opendir":
                for _ in range(3):
                    self.request(FXP_READDIR, NS(handle))
            closed = self.request(FXP_CLOSE, NS(handle))
            self.assertEqual(closed[0][0], FXP_STATUS)
        if kind == FXP_NAME and label == "realpath":
            (count,) = struct.unpack("!L", payload[:4])
            path, _ = getNS(payload[4:])
            # The virtual path, in which "/" is the home: nothing above it.
            self.assertEqual(path, normalise(name).encode("utf-8"))
            self.assertNotIn(b"..", path.split(b"/"))

    def test_hostileNamesStayHome(self) -> None:
        """
        For every operation, names with C{..}, backslashes, tildes,
        doubled slashes, percent-encoding, look-alikes of C{.} and C{/},
        and literal copies of other users' prefixes touch only keys in the
        user's home.  Other users' objects are never read, changed or
        removed.
        """
        for name in HOSTILE:
            for label, kind, payload in self.operations(name):
                self.assertConfined(name, label, self.request(kind, payload))
        for key in ("users/bob/secret", "users/alice2/secret", "secret-at-root"):
            self.assertEqual(self.store.objects[key][0], b"not yours", key)
        self.assertTrue(self.store.touched)

    def test_invalidNamesNeverReachS3(self) -> None:
        """
        NUL and control characters, invalid or overlong UTF-8, surrogates,
        and names beyond S3's 1,024-byte key limit are refused, with
        C{BAD_MESSAGE} (or C{OP_UNSUPPORTED} for links), before any S3
        call.
        """
        for name in INVALID:
            for label, kind, payload in self.operations(name):
                before = len(self.store.calls)
                replies = self.request(kind, payload)
                self.assertEqual(len(replies), 1, (name, label))
                replyKind, _, status = replies[0]
                if label == "realpath" and replyKind == FXP_NAME:
                    # Only too long for S3: realpath names no object.
                    self.assertTrue(name.isascii() and b"\x00" not in name or len(name) > 1000)
                    self.assertEqual(self.store.calls[before:], [])
                    continue
                self.assertEqual(replyKind, FXP_STATUS, (name, label))
                (code,) = struct.unpack("!L", status[:4])
                self.assertIn(code, (FX_BAD_MESSAGE, FX_OP_UNSUPPORTED), (name, label))
                self.assertEqual(self.store.calls[before:], [], (name, label))
                self.assertEqual(
                    [k for k in self.store.touched if not k.startswith(HOME)], [], (name, label)
                )

    def test_listingShowsOnlyHome(self) -> None:
        """
        A listing of the root shows only the home's entries, and every
        name listed opens back to the same object.
        """
        self.store.objects["users/alice/é and ‥"] = (b"x", 0)
        (reply,) = self.request(FXP_OPENDIR, NS(b"/"))
        handle, _ = getNS(reply[2])
        names = []
        while True:
            (kind, _, payload) = self.request(FXP_READDIR, NS(handle))[0]
            if kind != FXP_NAME:
                break
            (count,) = struct.unpack("!L", payload[:4])
            rest = payload[4:]
            for _ in range(count):
                filename, rest = getNS(rest)
                _, rest = getNS(rest)
                (flags,) = struct.unpack("!L", rest[:4])
                rest = rest[4 + 8 + 8 + 4 + 8 :] if flags == 0x0F else rest[4:]
                names.append(filename)
        self.assertEqual(sorted(names), sorted([b"dir", b"inside", "é and ‥".encode()]))
        for name in names:
            (kind, _, _) = self.request(FXP_STAT, NS(name))[0]
            self.assertEqual(kind, FXP_ATTRS, name)
        self.assertEqual([k for k in self.store.touched if not k.startswith(HOME)], [])
