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
  - Opening an existing file without truncating it and writing it from
    the start (OpenSSH's C{scp}) replaces it; writing it from its end
    appends to it, through a new multipart upload that copies the stored
    parts on the server (L{twisted_s3sftp.sftp.upload.UploadFile}).
    Writing into its middle is refused: an S3 object cannot be changed
    once stored.
  - An interrupted multipart upload is parked (L{twisted_s3sftp.sftp.parked}):
    shown with the bytes stored, continued by an OPEN without C{TRUNC},
    aborted by one with C{TRUNC} or a C{remove}.

Each operation first checks the session's rights
(L{twisted_s3sftp.sftp.rights}); a refusal is audited (C{denied}) and
answered C{PERMISSION_DENIED}, naming the right missing.  Without
L{OVERWRITE}, an upload is refused at OPEN over an existing name, and the
object is stored with C{If-None-Match: *}, so that a file stored by
someone else meanwhile is not replaced either.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
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
from twisted.internet.defer import Deferred
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
from ..store.cached import CachingStore
from ..store.dircache import (
    DIRECTORY,
    OUTSIDE,
    PAGE,
    UNKNOWN,
    UNLISTED,
    DirectoryCache,
    parentOf,
    startAfter,
)
from ..store.hashes import storedDigests
from ..store.interfaces import IObjectStore, ObjectInfo, ObjectSettings
from ..store.leases import Busy
from ..store.parts import PartPlanner, PartSchedule
from .attributes import (
    directoryAttributes,
    fileAttributes,
    modificationTime,
)
from .checkfile import CheckFileRequest
from .directory import DirectoryListing
from .download import DownloadFile, downloadReservation
from .extensions import announced, limitsReply, statvfsReply
from .flow import BASE_WINDOW, ChannelWindow, FreeWindow, uploadReservation
from .parked import ParkedFile, claimParked
from .paths import directoryPrefix, normalise, objectKey
from .rights import DELETE, DOWNLOAD, LIST, MKDIR, OVERWRITE, RENAME, UPLOAD, Refused
from .status import sftpOperation
from .upload import TRUNCATE_REFUSED, UPLOADER, MemoryBudget, Resumption, UploadFile, whenSettled

log = Logger()

#: Entries asked for when looking a path up (one S3 list page).
LOOKUP_PAGE = 1000

#: What L{S3SFTPServer._lookup} returns for a directory.
_DIRECTORY = object()

#: What L{S3SFTPServer._lookup} finds.
Found = ObjectInfo | UploadFile | ParkedFile | object | None


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
    rights = Attribute("The session's L{Rights}.")
    settings = Attribute("The L{ObjectSettings} of the objects the user's uploads create.")
    own = Attribute("The L{OwnFiles} this connection stored.")
    parked = Attribute("The server's L{ParkedUploads}, seen by every session.")
    parkedKnown = Attribute(
        "L{None}, or a Deferred firing once this connection has listed its user's parked uploads."
    )
    offload = Attribute(
        "L{None}, or a callable running a function on a worker thread and "
        "returning a Deferred of its result: where uploads hash."
    )


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
        return announced(self.avatar.policy.hashes)

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
            self._require(DOWNLOAD, "reading a file", virtual)
            return await self._openDownload(virtual, key)
        self._require(UPLOAD, "uploading", virtual)
        if self.avatar.uploads.draining:
            raise GatewayError("the server is shutting down; upload again shortly")
        await self._activeUpload(key)
        parked = await self._parkedFile(key)
        if parked is not None:
            if flags & FXF_EXCL:
                raise FileExists("file already exists")
            if not flags & FXF_TRUNC:
                return await self._resumeUpload(virtual, parked, flags, attrs)
            idle = await self.avatar.parked.idle(parked)
            if idle is not None:
                # An upload running elsewhere is left alone: the last CLOSE
                # wins, as for two uploads at once.
                await self.avatar.parked.discard(idle, "the file was opened with truncation")
        replaces = None
        mayOverwrite = self.avatar.rights.has(OVERWRITE)
        if (
            flags & (FXF_EXCL | FXF_APPEND)
            or not flags & FXF_TRUNC
            or not flags & FXF_CREAT
            or not mayOverwrite
        ):
            replaces = await self._checkTarget(virtual, flags, mayOverwrite)
        appendTo = None
        if replaces is not None and not flags & FXF_TRUNC:
            # A first WRITE at its end appends to it: its metadata (the
            # saved hash state) is needed.
            appendTo = await self._store.headObject(key)
        policy = self.avatar.policy
        planner = PartPlanner(
            PartSchedule(policy.partSize, policy.limits),
            capacity=0,
            buffers=self.avatar.memory.buffers,
            algorithms=policy.hashes,
        )
        budget = await self._uploadBudget(planner)
        return self._startUpload(
            virtual,
            key,
            planner,
            budget,
            attrs.get("mtime"),
            replaces=replaces,
            exclusive=bool(exclusive) or not mayOverwrite,
            appending=bool(flags & FXF_APPEND),
            appendTo=appendTo,
        )

    async def _uploadBudget(self, planner: PartPlanner) -> MemoryBudget:
        """
        @return: the memory reserved for an upload cut by C{planner}, whose
            capacity is set to match.
        """
        policy = self.avatar.policy
        budget = MemoryBudget(self.avatar.memory, self.window, self.avatar.clock, policy.memoryWait)
        await budget.reserve(
            *uploadReservation(planner.nextPartSize, policy.concurrency, policy.bufferLimit)
        )
        planner.capacity = budget.reserved + BASE_WINDOW
        return budget

    def _startUpload(
        self,
        virtual: str,
        key: str,
        planner: PartPlanner,
        budget: MemoryBudget,
        mtime: int | None,
        replaces: int | None = None,
        exclusive: bool = False,
        resumed: Resumption | None = None,
        appending: bool = False,
        appendTo: ObjectInfo | None = None,
    ) -> UploadFile:
        clock = self.avatar.clock
        upload = UploadFile(
            store=self._store,
            key=key,
            planner=planner,
            budget=budget,
            policy=self.avatar.policy,
            owner=self.avatar.username,
            now=clock.seconds,
            uploads=self.avatar.uploads,
            leases=self.avatar.leases,
            mtime=mtime,
            replaces=replaces,
            path=virtual,
            settings=self.avatar.settings,
            exclusive=exclusive,
            maxSize=self.avatar.rights.maxFileSize,
            onStored=self.avatar.own.add,
            resumed=resumed,
            appending=appending,
            appendTo=appendTo,
            onParked=lambda record, etag: self.avatar.parked.park(record, etag, clock.seconds()),
            offload=self.avatar.offload,
        )
        self.avatar.uploads.add(upload)
        # A resumed upload is worth a line of its own; a new one is not (its
        # audit line tells its outcome), and a line per small file cost a
        # twentieth of the reactor's time in a session of them.
        (log.debug if resumed is None else log.info)(
            "Upload of {key} for {owner} {how}",
            key=key,
            owner=self.avatar.username,
            how="opened" if resumed is None else f"resumed at {planner.received}",
        )
        return upload

    async def _resumeUpload(
        self, virtual: str, parked: ParkedFile, flags: int, attrs: dict[str, int]
    ) -> UploadFile:
        """
        Continue a parked upload (see L{twisted_s3sftp.sftp.parked}).
        """
        record = parked.record
        algorithms = self.avatar.policy.hashes
        planner = PartPlanner(record.schedule, 0, self.avatar.memory.buffers, algorithms=algorithms)
        planner.restart(list(record.checkpoints))
        budget = await self._uploadBudget(planner)
        try:
            lease, parts = await claimParked(
                self.avatar.parked, parked, self._store, self.avatar.username
            )
        except BaseException:
            budget.close()
            raise
        checkpoints = lease.record.checkpoints
        if checkpoints[-1] != record.checkpoints[-1]:
            planner = PartPlanner(
                record.schedule, planner.capacity, planner.buffers, algorithms=algorithms
            )
            planner.restart(list(checkpoints))
        mtime = attrs.get("mtime", record.mtime)
        return self._startUpload(
            virtual,
            parked.key,
            planner,
            budget,
            mtime,
            exclusive=not self.avatar.rights.has(OVERWRITE),
            resumed=Resumption(lease, parts),
            appending=bool(flags & FXF_APPEND),
        )

    async def _activeUpload(self, key: str) -> UploadFile | None:
        """
        @return: the latest upload under way to C{key} on this server, once
            any being parked is (a client that lost its connection often
            asks again before the server has parked its upload).
        """
        for upload in self.avatar.uploads.every(key):
            parking = upload.parking
            if parking is not None:
                await whenSettled(parking)
        found: UploadFile | None = self.avatar.uploads.get(key)
        return found

    async def _knowParked(self) -> bool:
        """
        List the user's parked uploads, once per connection.

        @return: whether interrupted uploads are kept at all.
        """
        parked = self.avatar.parked
        if not parked.enabled:
            return False
        if self.avatar.parkedKnown is None:
            self.avatar.parkedKnown = Deferred.fromCoroutine(parked.load(self.avatar.username))
        await whenSettled(self.avatar.parkedKnown)
        return True

    async def _parkedFile(self, key: str) -> ParkedFile | None:
        """
        @return: the user's parked upload to C{key}, or L{None}.
        """
        if not await self._knowParked():
            return None
        found: ParkedFile | None = self.avatar.parked.get(self.avatar.username, key)
        return found

    @sftpOperation("stat")
    async def getAttrs(self, path: bytes, followLinks: bool) -> dict[str, int]:
        virtual = normalise(path)
        found = await self._lookup(virtual, head=True)
        if found is None:
            raise NoSuchFile("no such file or directory")
        if found is not _DIRECTORY:
            self._require(LIST, "the status of a file", virtual, self._isOwn(found))
        if isinstance(found, UploadFile | ParkedFile):
            return found.attributes()
        if isinstance(found, ObjectInfo):
            return fileAttributes(found.size, modificationTime(found))
        return directoryAttributes(await self._directoryTime(virtual))

    @sftpOperation("setstat")
    async def setAttrs(self, path: bytes, attrs: dict[str, int]) -> None:
        virtual = normalise(path)
        found = await self._lookup(virtual, head=True, timed=False, sure=True)
        if found is None:
            raise NoSuchFile("no such file or directory")
        if found is not _DIRECTORY:
            # What a SETSTAT answers tells a file's size and time: it needs
            # the list right, unless the file is the user's own.
            own = self._isOwn(found)
            self._require(LIST, "changing a file's attributes", virtual, own)
        if isinstance(found, UploadFile):
            self._require(UPLOAD, "changing a file", virtual, own)
            self._require(OVERWRITE, "changing a file", virtual, own)
            found.changeAttributes(attrs)
        elif isinstance(found, ObjectInfo):
            await self._setFileAttributes(found, attrs, virtual, own)
        elif isinstance(found, ParkedFile) and attrs.get("size", found.record.stored) != (
            found.record.stored
        ):
            raise NotSupported(TRUNCATE_REFUSED)
        # A directory's attributes, and a parked file's times (its upload,
        # once resumed, takes the time its client sets), are accepted and
        # ignored.

    @sftpOperation("opendir")
    async def openDirectory(self, path: bytes) -> DirectoryListing:
        virtual = normalise(path)
        prefix = directoryPrefix(self._home, virtual)
        mayList = self.avatar.rights.has(LIST)
        first = [
            (upload.key[len(prefix) :], upload.attributes())
            for upload in self.avatar.uploads.under(prefix)
            if mayList or self._isOwn(upload)
        ]
        if await self._knowParked():
            names = {name for name, _ in first}
            first += [
                (found.key[len(prefix) :], found.attributes())
                for found in self.avatar.parked.under(self.avatar.username, prefix)
                if found.key[len(prefix) :] not in names
            ]
        if not mayList:
            # Only this connection's own files: see rights.LIST.
            names = {name for name, _ in first}
            first += [entry for entry in self.avatar.own.under(prefix) if entry[0] not in names]
        listing = DirectoryListing(
            self._store, prefix, self.avatar.clock.seconds, first=first, listStore=mayList
        )
        if not await listing.start() and virtual != "/":
            raise NoSuchFile("no such directory")
        return listing

    @sftpOperation("mkdir")
    async def makeDirectory(self, path: bytes, attrs: dict[str, int]) -> None:
        virtual = normalise(path)
        self._require(MKDIR, "making a directory", virtual)
        found = await self._lookup(virtual)
        if found is _DIRECTORY:
            raise GatewayError("directory already exists")
        if found is not None:
            raise GatewayError("a file with that name exists")
        prefix = directoryPrefix(self._home, virtual)
        await self._store.putObject(prefix, b"", None, self._markerSettings)
        self._audit("mkdir", virtual, prefix)

    @sftpOperation("rmdir")
    async def removeDirectory(self, path: bytes) -> None:
        virtual = normalise(path)
        self._require(DELETE, "removing a directory", virtual)
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
        self._require(DELETE, "removing a file", virtual)
        key = objectKey(self._home, virtual)
        self.avatar.own.discard(key)
        uploads = self.avatar.uploads.every(key)
        for upload in uploads:
            # The upload is discarded; a CLOSE of it then fails, unless it
            # was already completing (then its object is deleted below).
            await upload.abort("the file was removed")
        parked = await self._parkedFile(key)
        if parked is not None:
            idle = await self.avatar.parked.idle(parked)
            if idle is None:
                raise Busy()
            await self.avatar.parked.discard(idle, "the file was removed")
        info = await self._store.headObject(key)
        if info is not None:
            await self._store.deleteObject(key)
            self._audit("remove", virtual, key)
        elif not uploads and parked is None:
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
        if extendedName == b"check-file-name":
            request = CheckFileRequest.parse(extendedName, extendedData)
            found = await self.hashedFile(request.target)
            return request.answer(found.size, storedDigests(found.metadata))
        raise NotSupported("unsupported extension")

    async def hashedFile(self, path: bytes) -> ObjectInfo:
        """
        The stored file a client asks the hash of (C{check-file-name}, or a
        hash command over C{exec}), with the confinement and the rights of
        any other SFTP request on it: the C{download} right, or a file this
        connection stored.

        A stored file is found with one HEAD: what sync tools ask about
        is there (rclone asks right after each upload), and a file this
        server wrote moments ago needs none (L{_whole}).  Only when the
        HEAD finds nothing is the path looked up as C{stat} does (a
        directory, or nothing).

        @param path: the path the client gave.
        @return: the object, with its metadata.
        @raise GatewayError: why there is no hash to give (no such file, a
            directory, a file still being uploaded, refused).
        """
        virtual = normalise(path)
        found = await self._lookup(virtual, head=True, headFirst=True, timed=False)
        if found is None:
            raise NoSuchFile("no such file")
        if found is _DIRECTORY:
            raise GatewayError("is a directory")
        if not isinstance(found, ObjectInfo):
            raise GatewayError("no stored hash: the file is still being uploaded")
        self._require(DOWNLOAD, "a file's hash", virtual, self._isOwn(found))
        return found

    @sftpOperation("check-file")
    async def checkFileHandle(
        self, extendedName: bytes, extendedData: bytes, opened: Callable[[bytes], Any]
    ) -> bytes:
        """
        C{check-file-handle}, and paramiko's C{check-file}: the hash of a
        file open for reading, from the metadata read when it was opened
        (the ETag it is pinned to).

        @param opened: the open file of a handle, or L{None}.
        """
        request = CheckFileRequest.parse(extendedName, extendedData)
        fileObj = opened(request.target)
        if fileObj is None:
            raise GatewayError("invalid handle")
        if not isinstance(fileObj, DownloadFile):
            raise GatewayError("no stored hash: the file is open for writing")
        info = fileObj.info
        return request.answer(info.size, storedDigests(info.metadata))

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
        await budget.reserve(*downloadReservation())
        log.info("Download of {key} for {owner} opened", key=key, owner=self.avatar.username)
        return DownloadFile(
            self._store,
            info,
            budget,
            owner=self.avatar.username,
            path=virtual,
            now=self.avatar.clock.seconds,
        )

    async def _checkTarget(self, virtual: str, flags: int, mayOverwrite: bool) -> int | None:
        """
        Check what an OPEN for writing would replace, when its flags or the
        user's rights make that matter: C{EXCL}, no C{CREAT}, no C{TRUNC}
        (OpenSSH's C{scp} writes "in place" and sets the size at the end; a
        resume writes from the old end, which the upload then refuses), or
        no L{OVERWRITE} right.

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
        self._require(OVERWRITE, "writing over an existing file", virtual, mayOverwrite)
        if flags & FXF_TRUNC:
            return None
        if isinstance(found, UploadFile):
            # Another session's upload under way: it cannot be continued
            # from here (its client may still be sending).
            raise Busy()
        if isinstance(found, ParkedFile):
            # Discarded at OPEN (with TRUNC); nothing is replaced.
            return None
        assert isinstance(found, ObjectInfo)
        return found.size

    async def _setFileAttributes(
        self, info: ObjectInfo, attrs: dict[str, int], virtual: str, own: bool
    ) -> None:
        if "size" in attrs and attrs["size"] != info.size:
            raise NotSupported(TRUNCATE_REFUSED)
        mtime = attrs.get("mtime")
        if mtime is not None and (mtime != modificationTime(info) or not self._timeKnown(info)):
            # A copy of the object onto itself: writing over it.
            self._require(UPLOAD, "setting a file's times", virtual, own)
            self._require(OVERWRITE, "setting a file's times", virtual, own)
            await self._store.copyObject(
                info.key,
                info.key,
                info.etag,
                info.size,
                info.metadata | {"mtime": str(mtime)},
                info.settings,
            )
            if info.key in self.avatar.own:
                self.avatar.own.add(info.key, fileAttributes(info.size, mtime))

    async def _rename(self, old: str, new: str, overwrite: bool) -> None:
        if "/" in (old, new):
            raise PermissionDenied("the home directory cannot be renamed")
        # Both names are checked before any S3 call.
        oldKey = objectKey(self._home, old)
        objectKey(self._home, new)
        found = await self._lookup(old, head=True, timed=False, sure=True)
        # Without the rename right, only a file of the user's own may be
        # renamed, and only to a free name (WinSCP's "name.filepart").
        own = self._isOwn(found) and oldKey == getattr(found, "key", None)
        self._require(RENAME, "renaming", old, own)
        if found is None:
            raise NoSuchFile("no such file or directory")
        if isinstance(found, UploadFile | ParkedFile):
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
        if isinstance(target, UploadFile | ParkedFile):
            raise GatewayError("a file with the new name is being uploaded")
        if target is not None and not overwrite:
            raise GatewayError("a file with the new name exists")
        if target is not None:
            self._require(UPLOAD, "renaming onto an existing file", new)
            self._require(OVERWRITE, "renaming onto an existing file", new)
            self._require(RENAME, "renaming onto an existing file", new)
        newKey = objectKey(self._home, new)
        # Where the new name must be free, it must still be free when the
        # copy lands (If-None-Match: *), as an upload's must.
        await self._store.copyObject(
            found.key,
            newKey,
            found.etag,
            found.size,
            found.metadata,
            found.settings,
            target is None,
        )
        await self._store.deleteObject(found.key)
        if own:
            attrs = self.avatar.own.discard(found.key)
            self.avatar.own.add(
                newKey, attrs or fileAttributes(found.size, modificationTime(found))
            )
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
        await self._store.putObject(newPrefix, b"", None, self._markerSettings)
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
            cache = self._cache
            marker = cache.marker(prefix) if cache is not None else UNLISTED
            if isinstance(marker, ObjectInfo):
                return marker.mtime
            if marker is not UNLISTED:
                return int(self.avatar.clock.seconds())
            listing = await self._store.listDirectory(prefix, 1)
            for info in listing.objects:
                if info.key == prefix:
                    return info.mtime
        return int(self.avatar.clock.seconds())

    @property
    def _markerSettings(self) -> ObjectSettings:
        """
        The settings of a directory's marker: the user's, but always in the
        standard storage class (an archived or infrequent-access marker
        would cost a minimum size, or be unreadable).
        """
        settings: ObjectSettings = self.avatar.settings
        return ObjectSettings(None, settings.sse, settings.sseKmsKeyId, settings.tags)

    def _isOwn(self, found: Found) -> bool:
        """
        @param found: what L{_lookup} found, with C{head} (a file's
            metadata).
        @return: whether C{found} is a file of the user's own: one whose
            metadata names them as its uploader (so that a file someone else
            stored over it since is not), or an upload of theirs under way;
            never for a session without the upload right (a user narrowed
            since keeps no allowance on what they stored before).
        """
        if not self.avatar.rights.has(UPLOAD):
            return False
        if isinstance(found, UploadFile | ParkedFile):
            return found.owner == self.avatar.username
        return (
            isinstance(found, ObjectInfo) and found.metadata.get(UPLOADER) == self.avatar.username
        )

    def _require(self, right: str, what: str, virtual: str, exempt: bool = False) -> None:
        """
        Refuse an operation, unless the session has C{right} or the
        operation is C{exempt} (on a file of its own).

        @param what: the operation, for the message and the audit trail.
        @raise Refused: naming C{right}.
        """
        if exempt or self.avatar.rights.has(right):
            return
        audit(
            "denied",
            warn=True,
            user=self.avatar.username,
            path=virtual,
            operation=what,
            right=right,
            reason=f"the {right!r} right is missing",
        )
        raise Refused(right, what)

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

    async def _cachedLookup(self, key: str) -> ObjectInfo | object | None:
        """
        Look C{key} up in the directory cache, listing its directory's
        first page if the cache does not hold the directory, and the page
        starting at C{key} if it holds the directory but not that name
        (L{twisted_s3sftp.store.dircache}).

        @return: what the cache answers: L{UNKNOWN} when there is no cache
            or it still cannot say (the name changed while it was listed).
        """
        cache = self._cache
        if cache is None:
            return UNKNOWN
        directory = parentOf(key)
        cached = cache.lookup(key)
        if cached is UNLISTED:
            # The store gives the listing to the cache.
            await self._store.listDirectory(directory, PAGE)
            cached = cache.lookup(key)
        if cached is OUTSIDE:
            size = cache.pageFor(key)
            await self._store.listDirectory(directory, size, startAfter=startAfter(key))
            cached = cache.lookup(key)
        return UNKNOWN if cached is UNLISTED or cached is OUTSIDE else cached

    def _whole(self, key: str, timed: bool) -> ObjectInfo | None:
        """
        @param timed: whether the file's time is wanted exactly.
        @return: the file at C{key} as this server wrote it moments ago,
            metadata included, as a HEAD would report it
            (L{twisted_s3sftp.store.dircache.DirectoryCache.whole}), or
            L{None}.  Its time is exact only if the client set one (the
            C{mtime} metadata): else it is when this server sent the
            write, not S3's C{LastModified}, and a C{timed} lookup asks S3.
        """
        whole = self._cache.whole(key) if self._cache is not None else None
        if whole is None or (timed and "mtime" not in whole.metadata):
            return None
        return whole

    def _timeKnown(self, info: ObjectInfo) -> bool:
        """
        @return: whether L{modificationTime} of C{info} is the time S3
            would report, not a cached entry's approximation.
        """
        return "mtime" in info.metadata or self._whole(info.key, timed=False) is not info

    async def _lookup(
        self,
        virtual: str,
        head: bool = False,
        headFirst: bool = False,
        timed: bool = True,
        sure: bool = False,
    ) -> Found:
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
        @param timed: with C{head}, whether the file's time is wanted
            exactly (L{_whole}).
        @param headFirst: for a path that most likely names a stored file
            (a hash asked for): send the HEAD first, and list only if it
            finds nothing.
        @param sure: for a request that fails on an absent name (SETSTAT,
            a rename's source): a name the directory cache holds absent is
            asked of S3 before it is called absent, as every name is in a
            worker of C{--workers} (L{DirectoryCache.absentKnown}).  The
            cache is this process's: a file another worker (or another
            server) stored within the TTL is in S3 but not in it, and
            rclone stores a file, sets its time and C{stat}s it on
            connections of their own.  Where S3 has it, the cache forgets
            the name.
        @return: the L{UploadFile}, the file's L{ObjectInfo}, L{_DIRECTORY},
            or L{None}.
        """
        if virtual == "/":
            return _DIRECTORY
        key = objectKey(self._home, virtual)
        upload = await self._activeUpload(key)
        if upload is not None:
            return upload
        parked = await self._parkedFile(key)
        if parked is not None:
            return parked
        if headFirst:
            whole = self._whole(key, timed)
            if whole is not None:
                return whole
            info = await self._store.headObject(key)
            if info is not None:
                return info
        cached = await self._cachedLookup(key)
        if cached is DIRECTORY:
            return _DIRECTORY
        if isinstance(cached, ObjectInfo):
            if not head:
                return cached
            whole = self._whole(key, timed)
            return whole if whole is not None else await self._store.headObject(key)
        if cached is None and not sure and self._cache is not None and self._cache.absentKnown:
            return None
        found = await self._uncachedLookup(key, head)
        if cached is None and found is not None and self._cache is not None:
            # The cache was behind S3: its listing is no longer to be used.
            self._cache.changed(key)
        return found

    @property
    def _cache(self) -> DirectoryCache | None:
        """
        The directory cache the store reports to, if it has one.
        """
        store = self._store
        return store.cache if isinstance(store, CachingStore) else None

    async def _uncachedLookup(self, key: str, head: bool) -> ObjectInfo | object | None:
        """
        Find what C{key} names in S3 (L{_lookup}'s listing of the key as a
        prefix).

        @return: the file's L{ObjectInfo} (from a HEAD if C{head}),
            L{_DIRECTORY}, or L{None}.
        """
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
