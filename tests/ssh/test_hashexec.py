"""
Tests for L{twisted_s3sftp.ssh.hashexec}: hash commands on a session
channel (C{exec}), answered from the digests stored with each object.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from twisted.conch.ssh.common import NS
from twisted.conch.ssh.connection import EXTENDED_DATA_STDERR
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from twisted_s3sftp.sftp.flow import MemoryLimit
from twisted_s3sftp.sftp.rights import Rights
from twisted_s3sftp.ssh.commands import MAX_STDIN
from twisted_s3sftp.ssh.session import S3User, SFTPSession
from twisted_s3sftp.store.memory import MemoryObjectStore
from twisted_s3sftp.store.parts import MiB, UploadPolicy


class Connection:
    """
    Records what a channel sends.
    """

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.channelsToRemoteChannel: dict[object, int] = {}

    def sendData(self, channel: object, data: bytes) -> None:
        self.events.append(("out", data))

    def sendExtendedData(self, channel: object, kind: int, data: bytes) -> None:
        self.events.append(("err" if kind == EXTENDED_DATA_STDERR else kind, data))

    def sendRequest(self, channel: object, kind: bytes, data: bytes) -> None:
        self.events.append((kind.decode(), int.from_bytes(data, "big")))

    def sendEOF(self, channel: object) -> None:
        self.events.append(("eof",))

    def sendClose(self, channel: object) -> None:
        self.events.append(("close",))


class HashExecTests(SynchronousTestCase):
    """
    An C{exec} of a hash command prints the stored digest and exits 0, or
    says on standard error why not and exits 1; others are refused.
    """

    def setUp(self) -> None:
        self.store = MemoryObjectStore()
        self.data = b"contents\n"
        self.store.objects["alice/d/f.txt"] = (self.data, 0)
        self.store.metadata["alice/d/f.txt"] = {
            "sha256": hashlib.sha256(self.data).hexdigest(),
            "md5chksum": base64.b64encode(hashlib.md5(self.data).digest()).decode(),
        }
        self.store.objects["alice/foreign"] = (b"x", 0)
        self.store.objects["bob/secret"] = (b"s", 0)

    def execute(self, line: bytes, stdin: bytes | None = None, rights: Rights | None = None) -> Any:
        """
        Run C{line} on a new channel of user C{alice}, sending C{stdin}
        and EOF.

        @return: what the channel sent, or L{None} if the request was
            refused.
        """
        clock = Clock()
        user = S3User(
            "alice",
            "alice/",
            self.store,
            UploadPolicy(),
            MemoryLimit(64 * MiB),
            clock,
            rights=rights,
        )
        conn = Connection()
        session = SFTPSession(conn=conn, avatar=user)
        session.remoteWindowLeft = session.remoteMaxPacket = 32768
        conn.channelsToRemoteChannel[session] = 1
        if not session.request_exec(NS(line)):
            return None
        # Nothing is sent before the request's reply.
        self.assertEqual(conn.events, [])
        clock.advance(0)
        if stdin is not None:
            session.dataReceived(stdin)
        session.eofReceived()
        return conn.events

    def test_storedDigest(self) -> None:
        """
        With a path: GNU's line of the stored digest (the path as given,
        escaping undone), exit status 0, EOF and close; audited.
        """
        md5 = hashlib.md5(self.data).hexdigest()
        with capturedLogs() as logged:
            events = self.execute(b"md5sum /d/f\\.txt")
        self.assertEqual(
            events,
            [("out", f"{md5}  /d/f.txt\n".encode()), ("exit-status", 0), ("eof",), ("close",)],
        )
        self.assertEqual(
            [(e["outcome"], e["algorithm"], e["path"]) for e in logged if e.get("audit")],
            [("answered", "md5", "/d/f.txt")],
        )
        events = self.execute(b"rclone hashsum sha256 d/f.txt")
        self.assertEqual(
            events[0], ("out", f"{hashlib.sha256(self.data).hexdigest()}  d/f.txt\n".encode())
        )

    def test_noStoredDigest(self) -> None:
        """
        An object with no such digest (another tool wrote it): no output,
        exit status 0, which rclone counts as "no hash", not an error.
        """
        self.assertEqual(
            self.execute(b"md5sum /foreign"), [("exit-status", 0), ("eof",), ("close",)]
        )

    def test_errors(self) -> None:
        """
        No such file, a directory, a path outside the home, a control
        character, a missing C{download} right: a message on standard
        error and exit status 1.
        """
        for line, message in [
            (b"md5sum /nope", b"no such file"),
            (b"md5sum /d", b"is a directory"),
            (b"md5sum ../bob/secret", b"no such file"),
            (b"md5sum '/a\x01b'", b""),
        ]:
            events = self.execute(line)
            self.assertEqual(events[0][0], "err", line)
            self.assertIn(message, events[0][1])
            self.assertEqual(events[1:], [("exit-status", 1), ("eof",), ("close",)], line)
        events = self.execute(b"md5sum /d/f.txt", rights=Rights(frozenset({"upload"})))
        self.assertEqual(events[0][0], "err")
        self.assertEqual(events[1], ("exit-status", 1))

    def test_standardInput(self) -> None:
        """
        Without a path, standard input is hashed at EOF (rclone's probe
        sends none); more than L{MAX_STDIN} bytes ends the command with
        exit status 1.
        """
        self.assertEqual(
            self.execute(b"md5sum")[0], ("out", b"d41d8cd98f00b204e9800998ecf8427e  -\n")
        )
        self.assertEqual(self.execute(b"sha256sum", b"abc")[0][1][:16], b"ba7816bf8f01cfea")
        events = self.execute(b"md5sum", b"x" * (MAX_STDIN + 1))
        self.assertEqual(events[0][0], "err")
        self.assertEqual(events[1], ("exit-status", 1))

    def test_refused(self) -> None:
        """
        Any other command, and a hash the server does not keep, is refused
        as a request: nothing is sent.
        """
        for line in (b"ls", b"sha1sum /d/f.txt", b"echo ${ShellId}%ComSpec%"):
            self.assertIsNone(self.execute(line), line)

    def test_oneCommandPerChannel(self) -> None:
        """
        A channel running a hash command takes neither a second command
        nor the SFTP subsystem.
        """
        user = S3User("alice", "alice/", self.store, UploadPolicy(), MemoryLimit(64 * MiB), Clock())
        session = SFTPSession(conn=Connection(), avatar=user)
        self.assertEqual(session.request_exec(NS(b"md5sum")), 1)
        self.assertEqual(session.request_exec(NS(b"md5sum")), 0)
        self.assertEqual(session.request_subsystem(NS(b"sftp")), 0)
