"""
A hash command running on a session channel (L{twisted_s3sftp.ssh.commands}):
what an C{exec} request for C{md5sum PATH} and its kin becomes.

With a path, the answer comes from the digests stored with the object,
found with one HEAD through the same confinement and rights as SFTP
(a missing file costs a listing more, to tell a directory from nothing)
(L{twisted_s3sftp.sftp.server.S3SFTPServer.hashedFile}):

  - a stored digest: its GNU line on standard output, exit status 0;
  - none (an object another tool wrote, or stored before that hash was
    kept): no output and exit status 0, which rclone counts as "no hash"
    and not as an error;
  - no such file, a directory, a refusal: a message on standard error and
    exit status 1.

Without one, standard input is hashed once the client sends EOF (rclone's
probe sends none), up to L{twisted_s3sftp.ssh.commands.MAX_STDIN} bytes; more
ends the command with exit status 1.  Every command is audited (C{hash}).
"""

from __future__ import annotations

import struct
from collections.abc import Awaitable, Callable

from attrs import define, field
from twisted.conch.ssh.channel import SSHChannel
from twisted.conch.ssh.connection import EXTENDED_DATA_STDERR
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..errors import GatewayError
from ..ops.audit import audit
from ..store.hashes import storedDigests
from ..store.interfaces import ObjectInfo
from .commands import MAX_STDIN, HashCommand

log = Logger()


@define(eq=False)
class HashRun:
    """
    One hash command on its channel.

    @ivar channel: the session channel it answers on.
    @ivar command: the command.
    @ivar lookup: finds the stored object of a path the client gave, or
        raises L{GatewayError} saying why there is none to hash.
    @ivar user: the user, for the audit trail.
    """

    channel: SSHChannel
    command: HashCommand
    lookup: Callable[[bytes], Awaitable[ObjectInfo]]
    user: str
    _stdin: bytearray = field(factory=bytearray, init=False)
    _done: bool = field(default=False, init=False)

    def start(self) -> None:
        """
        Begin: look the path up, or wait for standard input.
        """
        if self.command.path is not None:
            Deferred.fromCoroutine(self._answer(self.command.path))

    def dataReceived(self, data: bytes) -> None:
        """
        Standard input: kept for a command without a path, up to
        L{MAX_STDIN} bytes; ignored by one with a path.
        """
        if self.command.path is not None or self._done:
            return
        if len(self._stdin) + len(data) > MAX_STDIN:
            self._finish(
                b"", f"standard input longer than {MAX_STDIN} bytes\n".encode(), 1, "input too long"
            )
            return
        self._stdin += data

    def eofReceived(self) -> None:
        """
        The end of standard input: hash it, for a command without a path.
        """
        if self.command.path is None and not self._done:
            self._finish(self.command.ofInput(bytes(self._stdin)), b"", 0)

    async def _answer(self, path: str) -> None:
        try:
            info = await self.lookup(path.encode("utf-8"))
        except GatewayError as e:
            message = f"{self.command.algorithm}: {path}: {e.message}\n"
            self._finish(b"", message.encode(), 1, e.message)
            return
        except Exception as e:
            log.failure(
                "Unexpected error hashing {path} for {user}",
                Failure(e),
                path=path,
                user=self.user,
            )
            message = f"{self.command.algorithm}: {path}: internal error\n"
            self._finish(b"", message.encode(), 1, "internal error")
            return
        digest = storedDigests(info.metadata).get(self.command.algorithm)
        if digest is None:
            self._finish(b"", b"", 0)
        else:
            self._finish(self.command.line(digest), b"", 0)

    def _audit(self, outcome: str, reason: str = "") -> None:
        audit(
            "hash",
            warn=outcome == "failed",
            user=self.user,
            path=self.command.path or "-",
            algorithm=self.command.algorithm,
            outcome=outcome,
            reason=reason,
        )

    def _finish(self, out: bytes, err: bytes, status: int, reason: str = "") -> None:
        """
        Write the output, the exit status, and close the channel (once
        what is written has gone out); audit the outcome.

        @param reason: why the command failed, for the audit trail.
        """
        if self._done:
            return
        self._done = True
        channel, conn = self.channel, self.channel.conn
        if conn is None or channel.closing or channel not in conn.channelsToRemoteChannel:
            self._audit("failed", "the client closed the channel first")
            return
        if status:
            self._audit("failed", reason)
        else:
            self._audit("answered" if out else "none")
        if out:
            channel.write(out)
        if err:
            channel.writeExtended(EXTENDED_DATA_STDERR, err)
        conn.sendRequest(channel, b"exit-status", struct.pack(">L", status))
        if not channel.buf and not channel.extBuf:
            conn.sendEOF(channel)
        channel.loseConnection()
