"""
An in-memory L{IObjectStore}, for tests.

It keeps S3's rules that matter to the gateway (a part under the minimum
size is refused at completion, a completed or aborted upload id is gone)
and lets a test make chosen operations fail or wait.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from attrs import define, field
from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer

from ..errors import Changed, EndOfFile, FileExists, GatewayError, StoreError
from .checksums import crc32
from .interfaces import (
    IObjectStore,
    ObjectInfo,
    ObjectListing,
    ObjectSettings,
    StoredObject,
    StoredPart,
)
from .parts import MIN_PART_SIZE


@define(eq=False)
class _Held:
    """
    An operation a test asked to hold until it calls L{MemoryObjectStore.release}.
    """

    name: str
    run: Callable[[], object]
    result: Deferred[object] = field(factory=Deferred)


@implementer(IObjectStore)
@define(eq=False)
class MemoryObjectStore:
    """
    A bucket in a dictionary.

    @ivar objects: key -> (bytes, mtime) of every visible object.
    @ivar metadata: key -> user metadata of every visible object.
    @ivar settings: key -> the L{ObjectSettings} every visible object was
        stored with (a copy gets the source's tags, as on S3).
    @ivar uploads: upload id -> (key, {part number: bytes}) of every
        multipart upload neither completed nor aborted.
    @ivar uploadSettings: upload id -> the settings it was created with.
    @ivar calls: the name of every operation called, in order.
    @ivar failures: operation name -> errors to raise on its next calls.
    @ivar bucket: a name for the bucket, for logs.
    @ivar holding: names of operations that wait for L{release}.
    @ivar held: the operations now waiting.
    """

    now: Callable[[], float] = lambda: 0.0
    bucket: str = "memory"
    minPartSize: int = MIN_PART_SIZE
    objects: dict[str, tuple[bytes, int]] = field(factory=dict)
    metadata: dict[str, dict[str, str]] = field(factory=dict)
    settings: dict[str, ObjectSettings] = field(factory=dict)
    uploads: dict[str, tuple[str, dict[int, bytes]]] = field(factory=dict)
    uploadSettings: dict[str, ObjectSettings] = field(factory=dict)
    calls: list[str] = field(factory=list)
    failures: dict[str, list[Exception]] = field(factory=dict)
    holding: set[str] = field(factory=set)
    held: list[_Held] = field(factory=list)
    _nextUpload: int = 0

    def failNext(self, name: str, error: Exception | None = None) -> None:
        """
        Make the next call of operation C{name} fail.

        @param name: an L{IObjectStore} method name.
        @param error: what it fails with; a L{StoreError} by default (any
            other exception stands for a bug).
        """
        self.failures.setdefault(name, []).append(
            error or StoreError("injected failure", "InternalError")
        )

    def release(self, index: int | None = None) -> None:
        """
        Run held operations.

        @param index: the position in L{held} of the one to run; all of
            them, in the order they were called, if L{None}.
        """
        if index is None:
            held, self.held = self.held, []
        else:
            held = [self.held.pop(index)]
        for op in held:
            self._run(op.run, op.name).chainDeferred(op.result)

    def _call(self, name: str, run: Callable[[], object]) -> Deferred[object]:
        self.calls.append(name)
        if name in self.holding:
            op = _Held(name, run)
            self.held.append(op)
            return op.result
        return self._run(run, name)

    def _run(self, run: Callable[[], object], name: str = "") -> Deferred[object]:
        pending = self.failures.get(name)
        if pending:
            return fail(pending.pop(0))
        try:
            return succeed(run())
        except GatewayError as e:
            return fail(e)

    def headObject(self, key: str) -> Deferred[object]:
        def run() -> ObjectInfo | None:
            if key not in self.objects:
                return None
            return self._info(key, withMetadata=True)

        return self._call("headObject", run)

    def listDirectory(
        self, prefix: str, limit: int, token: str | None = None, startAfter: str | None = None
    ) -> Deferred[object]:
        def run() -> ObjectListing:
            objects: list[ObjectInfo] = []
            prefixes: list[str] = []
            last = ""
            for key in sorted(self.objects):
                if not key.startswith(prefix) or (
                    token is None and startAfter is not None and key <= startAfter
                ):
                    continue
                rest = key[len(prefix) :]
                isPrefix = "/" in rest
                entry = prefix + rest.split("/", 1)[0] + "/" if isPrefix else key
                if token is not None and entry <= token or entry == last:
                    continue
                if len(objects) + len(prefixes) >= limit:
                    return ObjectListing(objects, prefixes, token=last)
                last = entry
                if isPrefix:
                    prefixes.append(entry)
                else:
                    objects.append(self._info(key))
            return ObjectListing(objects, prefixes)

        return self._call("listDirectory", run)

    def getObject(self, key: str, start: int, length: int, etag: str) -> Deferred[object]:
        def run() -> bytes:
            if key not in self.objects or self._info(key).etag != etag:
                raise Changed("the file changed while it was being read")
            data = self.objects[key][0]
            if start >= len(data):
                raise EndOfFile("end of file")
            return data[start : start + length]

        return self._call("getObject", run)

    def putObject(
        self,
        key: str,
        data: bytes,
        metadata: dict[str, str] | None = None,
        settings: ObjectSettings | None = None,
        exclusive: bool = False,
        ifMatch: str | None = None,
    ) -> Deferred[object]:
        def run() -> StoredObject:
            if exclusive and key in self.objects:
                raise FileExists("a file with that name already exists")
            if ifMatch is not None and (key not in self.objects or self._info(key).etag != ifMatch):
                raise Changed("the file changed meanwhile")
            self.objects[key] = (bytes(data), int(self.now()))
            self.metadata[key] = dict(metadata or {})
            self.settings[key] = settings or ObjectSettings()
            return StoredObject(self._etag(data))

        return self._call("putObject", run)

    def createMultipartUpload(
        self, key: str, settings: ObjectSettings | None = None
    ) -> Deferred[object]:
        def run() -> str:
            self._nextUpload += 1
            uploadId = f"upload-{self._nextUpload}"
            self.uploads[uploadId] = (key, {})
            self.uploadSettings[uploadId] = settings or ObjectSettings()
            return uploadId

        return self._call("createMultipartUpload", run)

    def uploadPart(self, key: str, uploadId: str, number: int, data: bytes) -> Deferred[object]:
        def run() -> StoredPart:
            parts = self._upload(key, uploadId)
            parts[number] = bytes(data)
            return StoredPart(number, self._etag(data), crc32(data))

        return self._call("uploadPart", run)

    def uploadPartCopy(
        self, key: str, uploadId: str, number: int, source: str, etag: str, start: int, stop: int
    ) -> Deferred[object]:
        def run() -> StoredPart:
            parts = self._upload(key, uploadId)
            if source not in self.objects or self._info(source).etag != etag:
                raise Changed("the file changed while it was appended to")
            data = self.objects[source][0][start:stop]
            parts[number] = data
            return StoredPart(number, self._etag(data), crc32(data), len(data))

        return self._call("uploadPartCopy", run)

    def listParts(self, key: str, uploadId: str) -> Deferred[object]:
        def run() -> list[StoredPart]:
            parts = self._upload(key, uploadId)
            return [
                StoredPart(number, self._etag(data), None, len(data))
                for number, data in sorted(parts.items())
            ]

        return self._call("listParts", run)

    def completeMultipartUpload(
        self, key: str, uploadId: str, stored: list[StoredPart], exclusive: bool = False
    ) -> Deferred[object]:
        def run() -> StoredObject:
            parts = self._upload(key, uploadId)
            if exclusive and key in self.objects:
                raise FileExists("a file with that name already exists")
            # As with checksums on S3: parts 1 to n, each stored; parts
            # stored but not listed are dropped.
            # Every part's checksum is wanted, as S3 wants it for an upload
            # created with checksums; listParts reports none (as SeaweedFS).
            numbers = [part.number for part in stored]
            if sorted(numbers) != list(range(1, len(numbers) + 1)) or any(
                part.number not in parts
                or self._etag(parts[part.number]) != part.etag
                or part.checksum != crc32(parts[part.number])
                for part in stored
            ):
                raise StoreError("invalid part list", "InvalidPart")
            for number in sorted(numbers)[:-1]:
                if len(parts[number]) < self.minPartSize:
                    raise StoreError("part too small", "EntityTooSmall")
            del self.uploads[uploadId]
            body = b"".join(parts[number] for number in sorted(numbers))
            self.objects[key] = (body, int(self.now()))
            self.metadata[key] = {}
            self.settings[key] = self.uploadSettings.pop(uploadId)
            return StoredObject(self._etag(body))

        return self._call("completeMultipartUpload", run)

    def copyObject(
        self,
        source: str,
        destination: str,
        etag: str,
        size: int,
        metadata: dict[str, str],
        settings: ObjectSettings,
        exclusive: bool = False,
    ) -> Deferred[object]:
        def run() -> StoredObject:
            if source not in self.objects or self._info(source).etag != etag:
                raise Changed("the file changed meanwhile")
            if exclusive and destination in self.objects:
                raise FileExists("a file with that name already exists")
            self.objects[destination] = (self.objects[source][0], int(self.now()))
            self.metadata[destination] = dict(metadata)
            tags = self.settings.get(source, ObjectSettings()).tags
            self.settings[destination] = ObjectSettings(
                settings.storageClass, settings.sse, settings.sseKmsKeyId, tags
            )
            return StoredObject(self._info(destination).etag)

        return self._call("copyObject", run)

    def abortMultipartUpload(self, key: str, uploadId: str) -> Deferred[object]:
        def run() -> None:
            self._upload(key, uploadId)
            del self.uploads[uploadId]
            self.uploadSettings.pop(uploadId, None)

        return self._call("abortMultipartUpload", run)

    def deleteObject(self, key: str) -> Deferred[object]:
        def run() -> None:
            self.objects.pop(key, None)
            self.metadata.pop(key, None)
            self.settings.pop(key, None)

        return self._call("deleteObject", run)

    @staticmethod
    def _etag(data: bytes) -> str:
        return f'"{hashlib.md5(data).hexdigest()}"'

    def _info(self, key: str, withMetadata: bool = False) -> ObjectInfo:
        data, mtime = self.objects[key]
        if not withMetadata:
            return ObjectInfo(key, len(data), mtime, self._etag(data))
        stored = self.settings.get(key, ObjectSettings())
        return ObjectInfo(
            key,
            len(data),
            mtime,
            self._etag(data),
            dict(self.metadata.get(key, {})),
            ObjectSettings(stored.storageClass, stored.sse, stored.sseKmsKeyId),
        )

    def _upload(self, key: str, uploadId: str) -> dict[int, bytes]:
        upload = self.uploads.get(uploadId)
        if upload is None or upload[0] != key:
            raise StoreError("no such upload", "NoSuchUpload")
        return upload[1]
