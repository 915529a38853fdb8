"""
An L{IObjectStore} that tells a L{DirectoryCache} of every change made
through it, so that the cache never answers from before this server's own
writes, copies and deletions.
"""

from __future__ import annotations

from typing import Any

from attrs import define
from twisted.internet.defer import Deferred
from zope.interface import implementer

from .dircache import DirectoryCache
from .interfaces import IObjectStore, ObjectInfo, ObjectSettings, StoredObject, StoredPart


@implementer(IObjectStore)
@define(eq=False)
class CachingStore:
    """
    C{store}, reporting each change to C{cache} once the store has
    confirmed it (and, for a change that failed, too: it may have
    happened).

    Every other attribute is C{store}'s own.

    @ivar store: the object store.
    @ivar cache: the listings to keep up to date.
    """

    store: IObjectStore
    cache: DirectoryCache

    def __getattr__(self, name: str) -> Any:
        if name in ("store", "cache"):
            # Not set yet: no recursion.
            raise AttributeError(name)
        return getattr(self.store, name)

    def _changing(self, key: str, result: Deferred[Any]) -> Deferred[Any]:
        def changed(value: object) -> object:
            self.cache.changed(key)
            return value

        return result.addBoth(changed)

    def headObject(self, key: str) -> Deferred[ObjectInfo | None]:
        return self.store.headObject(key)

    def listDirectory(self, prefix: str, limit: int, token: str | None = None) -> Deferred[Any]:
        return self.store.listDirectory(prefix, limit, token)

    def getObject(self, key: str, start: int, length: int, etag: str) -> Deferred[bytes]:
        return self.store.getObject(key, start, length, etag)

    def putObject(
        self,
        key: str,
        data: bytes,
        metadata: dict[str, str] | None = None,
        settings: ObjectSettings | None = None,
        exclusive: bool = False,
        ifMatch: str | None = None,
    ) -> Deferred[StoredObject]:
        listed = self.cache.seconds()
        result: Deferred[StoredObject] = self.store.putObject(
            key, data, metadata, settings, exclusive, ifMatch
        )

        def stored(value: object) -> object:
            if isinstance(value, StoredObject) and not key.endswith("/"):
                self.cache.stored(ObjectInfo(key, len(data), int(listed), value.etag))
            else:
                self.cache.changed(key)
            return value

        return result.addBoth(stored)

    def createMultipartUpload(
        self, key: str, settings: ObjectSettings | None = None
    ) -> Deferred[str]:
        return self.store.createMultipartUpload(key, settings)

    def uploadPart(self, key: str, uploadId: str, number: int, data: bytes) -> Deferred[StoredPart]:
        return self.store.uploadPart(key, uploadId, number, data)

    def uploadPartCopy(
        self, key: str, uploadId: str, number: int, source: str, etag: str, start: int, stop: int
    ) -> Deferred[StoredPart]:
        return self.store.uploadPartCopy(key, uploadId, number, source, etag, start, stop)

    def listParts(self, key: str, uploadId: str) -> Deferred[list[StoredPart]]:
        return self.store.listParts(key, uploadId)

    def completeMultipartUpload(
        self, key: str, uploadId: str, parts: list[StoredPart], exclusive: bool = False
    ) -> Deferred[StoredObject]:
        return self._changing(
            key, self.store.completeMultipartUpload(key, uploadId, parts, exclusive)
        )

    def copyObject(
        self,
        source: str,
        destination: str,
        etag: str,
        size: int,
        metadata: dict[str, str],
        settings: ObjectSettings,
        exclusive: bool = False,
    ) -> Deferred[StoredObject]:
        return self._changing(
            destination,
            self.store.copyObject(source, destination, etag, size, metadata, settings, exclusive),
        )

    def abortMultipartUpload(self, key: str, uploadId: str) -> Deferred[None]:
        return self.store.abortMultipartUpload(key, uploadId)

    def deleteObject(self, key: str) -> Deferred[None]:
        return self._changing(key, self.store.deleteObject(key))
