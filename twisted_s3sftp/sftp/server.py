"""
The SFTP operations of one user's session over an L{IObjectStore}: Conch's
C{ISFTPServer}.

This module only translates.  Paths go through L{twisted_s3sftp.sftp.paths},
attributes through L{twisted_s3sftp.sftp.attributes}, files open for writing are
L{twisted_s3sftp.sftp.upload.UploadFile}, for reading
L{twisted_s3sftp.sftp.download.DownloadFile}, directories
L{twisted_s3sftp.sftp.directory.DirectoryListing}, and every error goes through
L{twisted_s3sftp.sftp.status.sftpError}, the one place where an exception
becomes an SFTP status.

How a file system maps onto S3 (the README has the user's view):

  - A file is an object; a directory is a key prefix.  C{mkdir} writes a
    zero-byte C{dir/} marker so that an empty directory exists for every
    server on the bucket; a prefix with objects under it is a directory
    whether or not it has one.  Parent directories are not checked when a
    file is uploaded: S3 has none to check.
  - C{rmdir} removes only an empty directory (its marker).
  - C{rename} of a file is a server-side copy and a delete; plain SFTP
    C{rename} refuses to replace an existing file, C{posix-rename} replaces
    it.  An empty directory can be renamed; a non-empty one cannot: S3
    would have to copy every object under it, and a failure half-way would
    leave two half-directories.
  - Times set with C{setstat} are kept in the object's C{mtime} metadata
    (a server-side copy of the object onto itself, once stored); modes and
    owners are accepted and ignored; sizes cannot change.
  - Appending, and writing into an existing object from anywhere but its
    start (a resumed upload), are refused: an S3 object cannot be changed
    once stored.  Opening an existing file without truncating it and
    writing it from the start (OpenSSH's C{scp}) replaces it.
"""

from __future__ import annotations

import struct
from typing import Any

from attrs import define, field
from twisted.conch.interfaces import ISFTPServer
from twisted.conch.ssh.common import getNS
from twisted.conch.ssh.filetransfer import (
    FXF_APPEND,
    FXF_CREAT,
    FXF_EXCL,
    FXF_TRUNC,
    FXF_WRITE,
)
from twisted.logger import Logger
from zope.interface import Attribute, Interface, implementer

from ..errors import (
    FileExists,
    GatewayError,
    InvalidPath,
    NoSuchFile,
    NotSupported,
    PermissionDenied,
)
from ..ops.audit import audit
from ..store.interfaces import IObjectStore, ObjectInfo
from ..store.parts import PartPlanner, PartSchedule
from .attributes import (
    directoryAttributes,
    fileAttributes,
    modificationTime,
)
from .directory import DirectoryListing
from .download import DownloadFile, downloadReservation
from .extensions import EXTENSIONS, limitsReply, statvfsReply
from .flow import BASE_WINDOW, ChannelWindow, FreeWindow, uploadReservation
from .paths import directoryPrefix, normalise, objectKey
from .status import sftpOperation
from .upload import TRUNCATE_REFUSED, MemoryBudget, UploadFile

log = Logger()

#: Entries asked for when looking a path up (one S3 list page).
LOOKUP_PAGE = 1000

#: What L{S3SFTPServer._lookup} returns for a directory.
_DIRECTORY = object()

#: What L{S3SFTPServer._lookup} finds.
Found = ObjectInfo | UploadFile | object | None


class ISFTPUser(Interface):
    """
    The logged-in user an L{S3SFTPServer} serves: what the SSH layer's
    avatar must provide (L{twisted_s3sftp.ssh.session.S3User} does).
    """

    username = Attribute("The login name (C{str}), for logs and the audit trail.")
    home = Attribute("The key prefix (C{str}) the user is confined to.")
    store = Attribute("The L{IObjectStore} (the bucket) every home lives in.")
    policy = Attribute("The L{UploadPolicy}: how uploads use memory and S3.")
    memory = Attribute("The server's L{MemoryLimit}, shared by all uploads.")
    clock = Attribute("The C{IReactorTime} every time is read from.")
    uploads = Attribute("The server's L{ActiveUploads}, seen by every session.")
    leases = Attribute("The L{Leases} marking multipart uploads as this server's, or L{None}.")


@implementer(ISFTPServer)
@define(eq=False)
class S3SFTPServer:
    """
    The SFTP operations of one user's session, confined to their home.

    @ivar avatar: the logged-in user.
    @ivar window: the SSH channel window the session's writes arrive on
        (set by the SFTP protocol; unmetered otherwise).
    """

    avatar: ISFTPUser
    window: ChannelWindow | FreeWindow = field(factory=FreeWindow)

    @property
    def _store(self) -> IObjectStore:
        return self.avatar.store

    @property
    def _home(self) -> str:
        return self.avatar.home

    def gotVersion(self, otherVersion: int, extData: dict[bytes, bytes]) -> dict[bytes, bytes]:
        return dict(EXTENSIONS)

    @sftpOperation("realpath")
    async def realPath(self, path: bytes) -> bytes:
        return normalise(path).encode("utf-8")

    @sftpOperation("open")
    async def openFile(
        self, filename: bytes, flags: int, attrs: dict[str, int]
    ) -> UploadFile | DownloadFile:
        virtual = normalise(filename)
        key = objectKey(self._home, virtual)
        # CREAT|EXCL without WRITE (paramiko's mode "x") creates a file as
        # open(2) does, so it is an upload too: refused over an existing
        # file, and the new file appears at CLOSE.
        exclusive = flags & FXF_CREAT and flags & FXF_EXCL
        if not flags & FXF_WRITE and not exclusive:
            return await self._openDownload(virtual, key)
        if self.avatar.uploads.draining:
            raise GatewayError("the server is shutting down; upload again shortly")
        if flags & FXF_APPEND:
            raise NotSupported(
                "appending is not supported: an S3 object cannot be changed "
                "once stored; upload the whole file again"
            )
        replaces = None
        if flags & FXF_EXCL or not flags & FXF_TRUNC or not flags & FXF_CREAT:
            replaces = await self._checkTarget(virtual, flags)
        policy = self.avatar.policy
        budget = MemoryBudget(self.avatar.memory, self.window, self.avatar.clock, policy.memoryWait)
        await budget.reserve(
            *uploadReservation(policy.partSize, policy.concurrency, policy.bufferLimit)
        )
        upload = UploadFile(
            store=self._store,
            key=key,
            planner=PartPlanner(
                PartSchedule(policy.partSize, policy.limits),
                capacity=budget.reserved + BASE_WINDOW,
                buffers=self.avatar.memory.buffers,
            ),
            budget=budget,
            policy=policy,
            owner=self.avatar.username,
            now=self.avatar.clock.seconds,
            uploads=self.avatar.uploads,
            leases=self.avatar.leases,
            mtime=attrs.get("mtime"),
            replaces=replaces,
            path=virtual,
        )
        self.avatar.uploads.add(upload)
        log.info("Upload of {key} for {owner} opened", key=key, owner=self.avatar.username)
        return upload

    @sftpOperation("stat")
    async def getAttrs(self, path: bytes, followLinks: bool) -> dict[str, int]:
        virtual = normalise(path)
        found = await self._lookup(virtual, head=True)
        if found is None:
            raise NoSuchFile("no such file or directory")
        if isinstance(found, UploadFile):
            return found.attributes()
        if isinstance(found, ObjectInfo):
            return fileAttributes(found.size, modificationTime(found))
        return directoryAttributes(await self._directoryTime(virtual))

    @sftpOperation("setstat")
    async def setAttrs(self, path: bytes, attrs: dict[str, int]) -> None:
        virtual = normalise(path)
        found = await self._lookup(virtual, head=True)
        if found is None:
            raise NoSuchFile("no such file or directory")
        if isinstance(found, UploadFile):
            found.changeAttributes(attrs)
        elif isinstance(found, ObjectInfo):
            await self._setFileAttributes(found, attrs)
        # A directory's attributes are accepted and ignored.

    @sftpOperation("opendir")
    async def openDirectory(self, path: bytes) -> DirectoryListing:
        virtual = normalise(path)
        prefix = directoryPrefix(self._home, virtual)
        listing = DirectoryListing(
            self._store,
            prefix,
            self.avatar.clock.seconds,
            first=[
                (upload.key[len(prefix) :], upload.attributes())
                for upload in self.avatar.uploads.under(prefix)
            ],
        )
        if not await listing.start() and virtual != "/":
            raise NoSuchFile("no such directory")
        return listing

    @sftpOperation("mkdir")
    async def makeDirectory(self, path: bytes, attrs: dict[str, int]) -> None:
        virtual = normalise(path)
        found = await self._lookup(virtual)
        if found is _DIRECTORY:
            raise GatewayError("directory already exists")
        if found is not None:
            raise GatewayError("a file with that name exists")
        prefix = directoryPrefix(self._home, virtual)
        await self._store.putObject(prefix, b"")
        self._audit("mkdir", virtual, prefix)

    @sftpOperation("rmdir")
    async def removeDirectory(self, path: bytes) -> None:
        virtual = normalise(path)
        if virtual == "/":
            raise PermissionDenied("the home directory cannot be removed")
        prefix = directoryPrefix(self._home, virtual)
        hasMarker = await self._checkEmpty(prefix)
        if not hasMarker:
            found = await self._lookup(virtual)
            if found is None:
                raise NoSuchFile("no such directory")
            raise GatewayError("not a directory")
        await self._store.deleteObject(prefix)
        self._audit("rmdir", virtual, prefix)

    @sftpOperation("remove")
    async def removeFile(self, path: bytes) -> None:
        virtual = normalise(path)
        key = objectKey(self._home, virtual)
        uploads = self.avatar.uploads.every(key)
        for upload in uploads:
            # The upload is discarded; a CLOSE of it then fails, unless it
            # was already completing (then its object is deleted below).
            await upload.abort("the file was removed")
        info = await self._store.headObject(key)
        if info is not None:
            await self._store.deleteObject(key)
            self._audit("remove", virtual, key)
        elif not uploads:
            if await self._lookup(virtual) is _DIRECTORY:
                raise GatewayError("is a directory (use rmdir)")
            raise NoSuchFile("no such file")

    @sftpOperation("rename")
    async def renameFile(self, oldPath: bytes, newPath: bytes) -> None:
        await self._rename(normalise(oldPath), normalise(newPath), overwrite=False)

    @sftpOperation("posix-rename")
    async def posixRename(self, oldPath: bytes, newPath: bytes) -> None:
        """
        C{posix-rename@openssh.com}: rename, replacing an existing file.
        """
        await self._rename(normalise(oldPath), normalise(newPath), overwrite=True)

    @sftpOperation("readlink")
    async def readLink(self, path: bytes) -> bytes:
        raise NotSupported("S3 has no symbolic links")

    @sftpOperation("symlink")
    async def makeLink(self, linkPath: bytes, targetPath: bytes) -> None:
        raise NotSupported("S3 has no symbolic links")

    @sftpOperation("extended")
    async def extendedRequest(self, extendedName: bytes, extendedData: bytes) -> bytes:
        if extendedName == b"statvfs@openssh.com":
            try:
                path, _ = getNS(extendedData)
            except struct.error:
                raise InvalidPath("malformed statvfs request") from None
            normalise(path)
            return statvfsReply()
        if extendedName == b"limits@openssh.com":
            return limitsReply()
        raise NotSupported("unsupported extension")

    async def _openDownload(self, virtual: str, key: str) -> DownloadFile:
        info = await self._store.headObject(key)
        if info is None:
            if await self._lookup(virtual) is _DIRECTORY:
                raise GatewayError("is a directory")
            raise NoSuchFile("no such file")
        budget = MemoryBudget(
            self.avatar.memory,
            FreeWindow(),
            self.avatar.clock,
            self.avatar.policy.memoryWait,
        )
        await budget.reserve(downloadReservation(), downloadReservation())
        log.info("Download of {key} for {owner} opened", key=key, owner=self.avatar.username)
        return DownloadFile(
            self._store,
            info,
            budget,
            owner=self.avatar.username,
            path=virtual,
            now=self.avatar.clock.seconds,
        )

    async def _checkTarget(self, virtual: str, flags: int) -> int | None:
        """
        Check what an OPEN for writing would replace, when its flags make
        that matter: C{EXCL}, no C{CREAT}, or no C{TRUNC} (OpenSSH's
        C{scp} writes "in place" and sets the size at the end; a resume
        writes from the old end, which the upload then refuses).

        @return: without C{TRUNC}, the size of the file replaced, if any.
        """
        found = await self._lookup(virtual)
        if found is _DIRECTORY:
            raise GatewayError("is a directory")
        if found is None:
            if not flags & FXF_CREAT:
                raise NoSuchFile("no such file")
            return None
        if flags & FXF_EXCL:
            raise FileExists("file already exists")
        if flags & FXF_TRUNC:
            return None
        if isinstance(found, UploadFile):
            return found.planner.received
        assert isinstance(found, ObjectInfo)
        return found.size

    async def _setFileAttributes(self, info: ObjectInfo, attrs: dict[str, int]) -> None:
        if "size" in attrs and attrs["size"] != info.size:
            raise NotSupported(TRUNCATE_REFUSED)
        mtime = attrs.get("mtime")
        if mtime is not None and mtime != modificationTime(info):
            await self._store.copyObject(
                info.key,
                info.key,
                info.etag,
                info.size,
                info.metadata | {"mtime": str(mtime)},
            )

    async def _rename(self, old: str, new: str, overwrite: bool) -> None:
        if "/" in (old, new):
            raise PermissionDenied("the home directory cannot be renamed")
        # Both names are checked before any S3 call.
        objectKey(self._home, old)
        objectKey(self._home, new)
        found = await self._lookup(old, head=True)
        if found is None:
            raise NoSuchFile("no such file or directory")
        if isinstance(found, UploadFile):
            raise GatewayError("the file is still being uploaded")
        if old == new:
            return
        target = await self._lookup(new)
        if found is _DIRECTORY:
            await self._renameDirectory(old, new, target)
            return
        assert isinstance(found, ObjectInfo)
        if target is _DIRECTORY:
            raise GatewayError("a directory with the new name exists")
        if isinstance(target, UploadFile):
            raise GatewayError("a file with the new name is being uploaded")
        if target is not None and not overwrite:
            raise GatewayError("a file with the new name exists")
        newKey = objectKey(self._home, new)
        await self._store.copyObject(found.key, newKey, found.etag, found.size, found.metadata)
        await self._store.deleteObject(found.key)
        self._audit("rename", old, found.key, to=new, toKey=newKey)

    async def _renameDirectory(self, old: str, new: str, target: Found) -> None:
        if (new + "/").startswith(old + "/"):
            raise GatewayError("a directory cannot be moved into itself")
        if target is not None:
            raise GatewayError("a file or directory with the new name exists")
        oldPrefix = directoryPrefix(self._home, old)
        newPrefix = directoryPrefix(self._home, new)
        await self._checkEmpty(
            oldPrefix,
            NotSupported(
                "renaming a directory that is not empty is not supported: S3 "
                "would have to copy every file in it"
            ),
        )
        await self._store.putObject(newPrefix, b"")
        await self._store.deleteObject(oldPrefix)
        self._audit("rename", old, oldPrefix, to=new, toKey=newPrefix)

    async def _checkEmpty(self, prefix: str, error: GatewayError | None = None) -> bool:
        """
        @param prefix: a directory's prefix.
        @param error: raised if anything is in it.
        @return: whether it has a marker object.
        @raise GatewayError: C{error}, or "directory not empty".
        """
        listing = await self._store.listDirectory(prefix, 2)
        marker = any(info.key == prefix for info in listing.objects)
        others = len(listing.objects) + len(listing.prefixes) - marker
        if others or any(True for _ in self.avatar.uploads.under(prefix)):
            raise error or GatewayError("directory not empty")
        return marker

    async def _directoryTime(self, virtual: str) -> int:
        """
        @return: when the directory's marker was stored, or the current
            time for the home or a directory without one.
        """
        if virtual != "/":
            prefix = directoryPrefix(self._home, virtual)
            listing = await self._store.listDirectory(prefix, 1)
            for info in listing.objects:
                if info.key == prefix:
                    return info.mtime
        return int(self.avatar.clock.seconds())

    def _audit(self, kind: str, virtual: str, key: str, **fields: Any) -> None:
        """
        Record a completed operation in the audit trail.
        """
        audit(
            kind,
            user=self.avatar.username,
            path=virtual,
            bucket=self._store.bucket,
            key=key,
            **fields,
        )

    async def _lookup(self, virtual: str, head: bool = False) -> Found:
        """
        Find what a path names, in one S3 request in all but rare cases.

        An upload under way on this server is found first.  Otherwise a
        listing of the key itself as a prefix (with C{/} as delimiter)
        holds the object of that exact key, if there is one, as its first
        entry, and the key's C{dir/} prefix if it is a directory, unless
        more than L{LOOKUP_PAGE} siblings sort between them (names that
        extend it with a character before C{/}, such as C{name.txt}); only
        then is a second request made.  A file wins over a directory of
        the same name.

        @param head: whether a file's metadata is wanted (a HEAD request).
        @return: the L{UploadFile}, the file's L{ObjectInfo}, L{_DIRECTORY},
            or L{None}.
        """
        if virtual == "/":
            return _DIRECTORY
        key = objectKey(self._home, virtual)
        upload = self.avatar.uploads.get(key)
        if upload is not None:
            return upload
        listing = await self._store.listDirectory(key, LOOKUP_PAGE)
        for info in listing.objects:
            if info.key == key:
                return await self._store.headObject(key) if head else info
        if key + "/" in listing.prefixes:
            return _DIRECTORY
        if listing.token is not None:
            directory = await self._store.listDirectory(key + "/", 1)
            if directory.objects or directory.prefixes:
                return _DIRECTORY
        return None
