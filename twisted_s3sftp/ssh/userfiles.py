"""
The per-user files of the keys directory (C{<user>.pub}, C{<user>.toml}),
read safely and cached by their stamp.

L{UserFiles} is looked up at each login: one C{stat}, and a read and parse
only when the file changed (modification time, size, inode or mode), so
that an administrator's change takes effect at the next login without a
restart.  A file is not trusted (L{Unusable}) if it is writable by group
or others, is not a regular file, is too large, or is a symbolic link
leading outside the keys directory (OpenSSH's C{StrictModes} in spirit).
Each version of a file is judged, and any problem logged, once.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from typing import Generic, TypeVar

from attrs import define, field, frozen
from twisted.logger import Logger
from twisted.python.filepath import FilePath

from ..sftp.paths import isValidUsername

log = Logger()

T = TypeVar("T")


@frozen
class Unusable:
    """
    A user file that exists but must not be trusted, or cannot be read.

    @ivar reason: why, for the log.
    """

    reason: str


@define(eq=False)
class UserFiles(Generic[T]):
    """
    One kind of per-user file in the keys directory.

    @ivar path: the keys directory.
    @ivar suffix: the files' suffix, e.g. C{".pub"}.
    @ivar parse: makes a file's bytes into its value; raises C{ValueError}
        with a reason for a file that is unusable as a whole.
    @ivar maxSize: the largest file read.
    @ivar kind: what the files are, for the log (C{"key file"}).
    """

    path: FilePath[str]
    suffix: str
    parse: Callable[[bytes, str], T]
    maxSize: int
    kind: str
    _cache: dict[str, tuple[tuple[int, ...], T | Unusable]] = field(
        factory=dict, init=False, repr=False
    )

    def fileFor(self, name: str) -> FilePath[str]:
        """
        @return: the file of user C{name}.
        """
        return self.path.child(name + self.suffix)

    def read(self, username: bytes | str) -> T | Unusable | None:
        """
        @param username: the name a client logs in as.
        @return: the value of the user's file; L{Unusable} if it exists but
            cannot be trusted or read; L{None} if there is none, or the
            name is not a valid username (never looked up on disk).
        """
        if isinstance(username, bytes):
            try:
                username = username.decode("ascii")
            except UnicodeDecodeError:
                return None
        if not isValidUsername(username):
            return None
        userFile = self.fileFor(username)
        try:
            info = os.stat(userFile.path)
        except FileNotFoundError:
            self._cache.pop(username, None)
            if os.path.lexists(userFile.path):
                # A link to nothing is not the absence of a file: a policy
                # behind it must not be read as no policy.
                return self._unusable(userFile, "a symbolic link to nothing")
            return None
        except OSError as e:
            return self._unusable(userFile, f"cannot be examined: {e.strerror}")
        stamp = _stamp(info)
        cached = self._cache.get(username)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        result = self._load(userFile, info, stamp)
        if result is not None:
            self._cache[username] = (stamp, result)
        return result if result is not None else Unusable("changed while it was read")

    def _load(
        self, userFile: FilePath[str], info: os.stat_result, stamp: tuple[int, ...]
    ) -> T | Unusable | None:
        """
        @return: the file's value or why it is unusable; L{None} if it
            changed while it was read (read again at the next login).
        """
        problem = self._fileProblem(userFile, info)
        if problem is not None:
            return self._unusable(userFile, problem)
        try:
            with open(userFile.path, "rb") as f:
                data = f.read(self.maxSize + 1)
                after = _stamp(os.fstat(f.fileno()))
        except OSError as e:
            return self._unusable(userFile, f"cannot be read: {e.strerror}")
        if after != stamp:
            return None
        try:
            return self.parse(data, userFile.path)
        except ValueError as e:
            return self._unusable(userFile, str(e))

    def _unusable(self, userFile: FilePath[str], reason: str) -> Unusable:
        log.warn(
            "Ignoring {kind} {path}: {reason}", kind=self.kind, path=userFile.path, reason=reason
        )
        return Unusable(reason)

    def _fileProblem(self, userFile: FilePath[str], info: os.stat_result) -> str | None:
        """
        @return: why C{userFile} must not be trusted, or L{None}.
        """
        if not stat.S_ISREG(info.st_mode):
            return "not a regular file"
        if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return "writable by group or others (chmod go-w)"
        if info.st_size > self.maxSize:
            return f"larger than {self.maxSize} bytes"
        home = os.path.realpath(self.path.path)
        target = os.path.realpath(userFile.path)
        if os.path.dirname(target) != home:
            return "a symbolic link leading outside the keys directory"
        return None


def _stamp(info: os.stat_result) -> tuple[int, ...]:
    # The change time too: a rewrite in place that keeps the modification
    # time and size (cp -p, rsync -t --inplace) still changes it.
    return (
        info.st_mtime_ns,
        info.st_ctime_ns,
        info.st_size,
        info.st_ino,
        info.st_dev,
        info.st_mode,
    )
