"""
An L{IObjectStore} that tells a L{DirectoryCache} of every change made
through it, so that the cache never answers from before this server's own
writes, copies and deletions, and gives it every directory listing's first
page (the lookups' own, and C{ls}'s).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from attrs import define, field
from twisted.internet.defer import Deferred
from zope.interface import implementer

from .dircache import PAGE, DirectoryCache
from .interfaces import (
    IObjectStore,
    ObjectInfo,
    ObjectListing,
    ObjectSettings,
    StoredObject,
    StoredPart,
)


@implementer(IObjectStore)
@define(eq=False)
class CachingStore:
    """
    C{store}, reporting each change to C{cache} once the store has
    answered it (a change that failed, too: it may have happened).

    Every other attribute is C{store}'s own.

    @ivar store: the object store.
    @ivar cache: the listings to keep up to date.
    """

    store: IObjectStore
    cache: DirectoryCache
    #: key -> this server's writes to it under way.
    _writing: dict[str, int] = field(factory=dict, init=False, repr=False)
    #: Keys with writes under way that overlapped another write to the
    #: same key: their replies may come back in another order than S3
    #: applied them.
    _overlapped: set[str] = field(factory=set, init=False, repr=False)

    def __getattr__(self, name: str) -> Any:
        if name in ("store", "cache", "_writing", "_overlapped"):
            # Not set yet: no recursion.
            raise AttributeError(name)
        return getattr(self.store, name)

    def _changing(
        self,
        key: str,
        result: Deferred[Any],
        stored: Callable[[object], ObjectInfo | None] = lambda value: None,
    ) -> Deferred[Any]:
        """
        Report the write C{result} stands for, to C{key}, once it is
        answered: the file C{stored} makes of its answer (all a HEAD would
        tell of it), if it was the only write to C{key} from its start to
        its end (S3 keeps the write it received last, and the replies of
        writes at once may come back in any order); else a change.
        """
        if key in self._writing:
            self._overlapped.add(key)
        self._writing[key] = self._writing.get(key, 0) + 1

        def answered(value: object) -> object:
            alone = key not in self._overlapped
            self._writing[key] -= 1
            if not self._writing[key]:
                del self._writing[key]
                self._overlapped.discard(key)
            info = stored(value) if alone else None
            if info is None:
                self.cache.changed(key)
            else:
                self.cache.stored(info, whole=True)
            return value

        return result.addBoth(answered)

    def _entering(
        self,
        key: str,
        size: int,
        metadata: dict[str, str] | None,
        settings: ObjectSettings | None,
    ) -> Callable[[object], ObjectInfo | None]:
        """
        @return: for L{_changing}, what a HEAD of C{key} would report once
            a write of C{size} bytes with C{metadata} and C{settings},
            sent now, is answered with a L{StoredObject} (its settings as a
            HEAD reports them, without tags); nothing for a directory's
            marker.
        """
        started = self.cache.seconds()
        kept = settings or ObjectSettings()

        def stored(value: object) -> ObjectInfo | None:
            if not isinstance(value, StoredObject) or key.endswith("/"):
                return None
            return ObjectInfo(
                key,
                size,
                int(started),
                value.etag,
                dict(metadata or {}),
                ObjectSettings(kept.storageClass, kept.sse, kept.sseKmsKeyId),
            )

        return stored

    def headObject(self, key: str) -> Deferred[ObjectInfo | None]:
        return self.store.headObject(key)

    def listDirectory(
        self, prefix: str, limit: int, token: str | None = None, startAfter: str | None = None
    ) -> Deferred[Any]:
        """
        List as the store does; a page of a directory's listing (C{prefix}
        empty or ending in C{/}) asked for a full L{PAGE} from its start
        (the lookups' own, C{ls}'s), or from a C{startAfter} (a lookup's,
        beyond the pages cached), goes into the cache.  Shorter listings
        from the start are probes (is a directory empty, its marker's
        time), left out.
        """
        if (
            token is not None
            or (limit < PAGE and startAfter is None)
            or not (prefix == "" or prefix.endswith("/"))
        ):
            return self.store.listDirectory(prefix, limit, token, startAfter)
        mark = self.cache.mark()

        def listed(listing: ObjectListing) -> ObjectListing:
            self.cache.listed(prefix, listing, mark, startAfter)
            return listing

        return self.store.listDirectory(prefix, limit, token, startAfter).addCallback(listed)

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
        entering = self._entering(key, len(data), metadata, settings)
        return self._changing(
            key, self.store.putObject(key, data, metadata, settings, exclusive, ifMatch), entering
        )

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
        entering = self._entering(destination, size, metadata, settings)
        return self._changing(
            destination,
            self.store.copyObject(source, destination, etag, size, metadata, settings, exclusive),
            entering,
        )

    def abortMultipartUpload(self, key: str, uploadId: str) -> Deferred[None]:
        return self.store.abortMultipartUpload(key, uploadId)

    def deleteObject(self, key: str) -> Deferred[None]:
        return self._changing(key, self.store.deleteObject(key))
