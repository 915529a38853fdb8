"""
The seam between the SFTP layer and object storage: L{IObjectStore} and the
values it speaks (L{ObjectInfo}, L{ObjectListing}, L{StoredPart},
L{StoredObject}, L{ObjectSettings}).

L{IObjectStore} is implemented over boto3 by L{twisted_s3sftp.store.s3} and in
memory by L{twisted_s3sftp.store.memory}.  Every method returns a Deferred; on
failure it fails with a L{twisted_s3sftp.errors.GatewayError}.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from attrs import evolve, field, frozen
from zope.interface import Attribute, Interface

#: S3's storage classes.
STORAGE_CLASSES = frozenset(
    (
        "STANDARD",
        "REDUCED_REDUNDANCY",
        "STANDARD_IA",
        "ONEZONE_IA",
        "INTELLIGENT_TIERING",
        "GLACIER",
        "DEEP_ARCHIVE",
        "OUTPOSTS",
        "GLACIER_IR",
        "SNOW",
        "EXPRESS_ONEZONE",
    )
)

#: The storage classes whose objects must be restored before they can be
#: read or copied.
ARCHIVE_CLASSES = frozenset(("GLACIER", "DEEP_ARCHIVE"))

#: S3's server-side encryption modes a server may ask for.
SSE_MODES = frozenset(("AES256", "aws:kms"))

#: The most tags S3 keeps on an object.
MAX_TAGS = 10

#: What S3 allows in a tag's key (128 characters at most) and value (256).
_TAG = re.compile(r"[\w .:/=+@-]*")


def _tagPairs(tags: Iterable[tuple[str, str]] | None) -> tuple[tuple[str, str], ...] | None:
    return None if tags is None else tuple(sorted(tags))


@frozen
class ObjectSettings:
    """
    How the objects the server creates are stored: the S3 settings sent
    with every call that creates one (PutObject, CreateMultipartUpload,
    CopyObject).  A field left L{None} is not sent, leaving it to the
    bucket's defaults; for a copy, the source's value is sent instead.

    The values an administrator gives are judged by L{checked}; those a
    HEAD reports are taken as they are (S3 has more classes and modes than
    a server may ask for, such as C{aws:kms:dsse}).

    @ivar storageClass: one of L{STORAGE_CLASSES}.
    @ivar sse: one of L{SSE_MODES}.
    @ivar sseKmsKeyId: the KMS key, with C{sse} C{"aws:kms"} only.
    @ivar tags: C{(key, value)} pairs, sorted; a copy keeps the source's
        tags whatever this says.
    """

    storageClass: str | None = None
    sse: str | None = None
    sseKmsKeyId: str | None = None
    tags: tuple[tuple[str, str], ...] | None = field(default=None, converter=_tagPairs)

    def checked(self) -> ObjectSettings:
        """
        @return: these settings, if S3 would accept them from this server.
        @raise ValueError: with a reason, otherwise.
        """
        if self.storageClass is not None and self.storageClass not in STORAGE_CLASSES:
            raise ValueError(
                f"storage class {self.storageClass!r} is not one of "
                f"{', '.join(sorted(STORAGE_CLASSES))}"
            )
        if self.sse is not None and self.sse not in SSE_MODES:
            raise ValueError(f"sse {self.sse!r} must be AES256 or aws:kms")
        if self.sseKmsKeyId is not None and self.sse != "aws:kms":
            raise ValueError("a KMS key id needs sse aws:kms")
        if self.sseKmsKeyId == "":
            raise ValueError("the KMS key id is empty")
        for key, value in self.tags or ():
            if key.lower().startswith("aws:"):
                raise ValueError(f"tag {key}: keys starting with aws: are S3's own")
            if not (0 < len(key) <= 128 and len(value) <= 256) or not (
                _TAG.fullmatch(key) and _TAG.fullmatch(value)
            ):
                raise ValueError(
                    f"tag {key}={value} is not one S3 accepts (letters, digits, spaces "
                    "and + - = . _ : / @; keys up to 128 characters, values up to 256)"
                )
        if len(self.tags or ()) > MAX_TAGS:
            raise ValueError(f"S3 keeps at most {MAX_TAGS} tags on an object")
        return self

    @property
    def staging(self) -> ObjectSettings:
        """
        These settings for a multipart upload that is copied onto itself
        once complete (to record its SHA-256): an archive class
        (L{ARCHIVE_CLASSES}) is left to that copy, since S3 cannot copy an
        archived object.
        """
        if self.storageClass in ARCHIVE_CLASSES:
            return evolve(self, storageClass=None)
        return self

    def over(self, base: ObjectSettings) -> ObjectSettings:
        """
        @return: these settings where they are set, C{base}'s elsewhere; a
            C{sse} set here brings its own KMS key id (or none).
        """
        settings = base
        if self.storageClass is not None:
            settings = evolve(settings, storageClass=self.storageClass)
        if self.sse is not None:
            settings = evolve(settings, sse=self.sse, sseKmsKeyId=self.sseKmsKeyId)
        if self.tags is not None:
            settings = evolve(settings, tags=self.tags)
        return settings


@frozen
class ObjectInfo:
    """
    One object, as a HEAD or a listing reports it.

    @ivar key: its full S3 key.
    @ivar size: its size in bytes.
    @ivar mtime: when S3 stored it (C{LastModified}), seconds since the
        epoch.
    @ivar etag: its ETag, quotes included, as S3 sends it.
    @ivar metadata: its user metadata (C{x-amz-meta-*}, without the
        prefix); only a HEAD reports it, a listing leaves it empty.
    @ivar settings: its storage class and encryption, as a HEAD reports
        them (tags aside), which a copy of it keeps.
    """

    key: str
    size: int
    mtime: int
    etag: str = ""
    metadata: dict[str, str] = field(factory=dict, hash=False)
    settings: ObjectSettings = field(factory=ObjectSettings, hash=False)


def _infos(objects: Iterable[ObjectInfo]) -> tuple[ObjectInfo, ...]:
    """
    @return: C{objects} as a tuple (a typed converter: attrs' C{tuple}
        would leave the element type unknown to mypy).
    """
    return tuple(objects)


def _names(prefixes: Iterable[str]) -> tuple[str, ...]:
    """
    @return: C{prefixes} as a tuple.
    """
    return tuple(prefixes)


@frozen
class ObjectListing:
    """
    What is directly under one prefix, with C{/} as the delimiter.

    @ivar objects: the objects directly under the prefix, in key order.
    @ivar prefixes: the common prefixes (sub-directories), each ending in
        C{/}, in key order.
    @ivar token: where to continue the listing (the S3 continuation
        token), or L{None} if nothing is left.
    """

    objects: tuple[ObjectInfo, ...] = field(converter=_infos, default=())
    prefixes: tuple[str, ...] = field(converter=_names, default=())
    token: str | None = None


@frozen
class StoredPart:
    """
    A part the object store has confirmed.

    @ivar number: its part number.
    @ivar etag: the ETag the store gave it.
    @ivar checksum: the checksum it was sent with (base64), if any.
    @ivar size: its size in bytes, where the store said (L{IObjectStore.listParts}).
    """

    number: int
    etag: str
    checksum: str | None = None
    size: int | None = None


@frozen
class StoredObject:
    """
    An object the store has confirmed.

    @ivar etag: its ETag.
    @ivar versionId: its version, if the bucket keeps versions.
    """

    etag: str
    versionId: str | None = None


class IObjectStore(Interface):
    """
    One bucket of an S3-like object store.
    """

    bucket = Attribute("The bucket's name, for logs.")

    def headObject(key):  # type: ignore[no-untyped-def]
        """
        @param key: an object key.
        @return: a Deferred firing with its
            L{ObjectInfo}, ETag and user metadata
            included, or L{None} if there is no such object.
        """

    def listDirectory(prefix, limit, token=None, startAfter=None):  # type: ignore[no-untyped-def]
        """
        List what is directly under C{prefix}, C{/} being the delimiter, in
        key order, one page at a time.

        @param prefix: a key prefix (usually empty or ending in C{/}).
        @param limit: the most entries (objects plus prefixes) wanted; the
            store may return fewer but never more.
        @param token: the C{token} of the previous page, to continue after
            it; L{None} to start.
        @param startAfter: without C{token}: start the listing after this
            key (S3's C{StartAfter}): with the keys greater than it.
        @return: a Deferred firing with a
            L{twisted_s3sftp.sftp.attributes.ObjectListing} whose C{token} is
            L{None} when nothing is left.
        """

    def getObject(key, start, length, etag):  # type: ignore[no-untyped-def]
        """
        Read a range of an object (a ranged GET).

        @param key: the object key.
        @param start: the first byte wanted.
        @param length: how many bytes, at most; fewer come back at the end
            of the object.
        @param etag: the ETag the object must still have.
        @return: a Deferred firing with the bytes; it fails with
            L{twisted_s3sftp.errors.Changed} if the object's ETag is no
            longer C{etag} or it is gone, and with
            L{twisted_s3sftp.errors.EndOfFile} if C{start} is at or beyond
            its end.
        """

    def putObject(  # type: ignore[no-untyped-def]
        key, data, metadata=None, settings=None, exclusive=False, ifMatch=None
    ):
        """
        Store a whole object at once, replacing any object at C{key}.  The
        body is sent with a checksum the store verifies.

        @param key: the object key.
        @param data: its bytes.
        @param metadata: user metadata (C{x-amz-meta-*}), or L{None}.
        @param settings: the L{ObjectSettings} to store it with, or L{None}.
        @param exclusive: store it only if no object is at C{key}
            (C{If-None-Match: *}); otherwise fail with
            L{twisted_s3sftp.errors.FileExists}.
        @param ifMatch: store it only if the object at C{key} has this
            ETag (C{If-Match}: a compare-and-swap); otherwise fail with
            L{twisted_s3sftp.errors.Changed}.
        @return: a Deferred firing with its
            L{StoredObject} (ETag and version) once
            it is stored.
        """

    def createMultipartUpload(key, settings=None):  # type: ignore[no-untyped-def]
        """
        @param key: the object key the upload will create.
        @param settings: the L{ObjectSettings} to store it with, or L{None}.
        @return: a Deferred firing with the upload id (C{str}).
        """

    def uploadPart(key, uploadId, number, data):  # type: ignore[no-untyped-def]
        """
        Store one part, sent with a checksum the store verifies.

        @param key: the upload's object key.
        @param uploadId: from L{createMultipartUpload}.
        @param number: the part number, from 1.
        @param data: the part's bytes.
        @return: a Deferred firing with a
            L{StoredPart}.
        """

    def uploadPartCopy(  # type: ignore[no-untyped-def]
        key, uploadId, number, source, etag, start, stop
    ):
        """
        Store one part as a copy of a range of an object (on the server: no
        byte passes through the gateway).

        @param key: the upload's object key.
        @param uploadId: from L{createMultipartUpload}.
        @param number: the part number, from 1.
        @param source: the key of the object copied from.
        @param etag: the ETag C{source} must have.
        @param start: the first byte copied.
        @param stop: the byte after the last copied.
        @return: a Deferred firing with a L{StoredPart} (its checksum as
            the store computed it); it fails with
            L{twisted_s3sftp.errors.Changed} if C{source} changed.
        """

    def listParts(key, uploadId):  # type: ignore[no-untyped-def]
        """
        List the parts of an unfinished multipart upload, every page.

        @param key: the upload's object key.
        @param uploadId: from L{createMultipartUpload}.
        @return: a Deferred firing with its L{StoredPart}s (with their
            sizes; with their checksums where the store reports them), by
            part number; it fails with a
            L{twisted_s3sftp.errors.StoreError} whose C{storeCode} is
            C{NoSuchUpload} if the upload is gone.
        """

    def completeMultipartUpload(  # type: ignore[no-untyped-def]
        key, uploadId, parts, exclusive=False
    ):
        """
        Make the object visible from its parts.

        @param key: the upload's object key.
        @param uploadId: from L{createMultipartUpload}.
        @param parts: every L{StoredPart}, in any
            order.
        @param exclusive: only if no object is at C{key}
            (C{If-None-Match: *}); otherwise fail with
            L{twisted_s3sftp.errors.FileExists}, leaving the upload to be
            aborted.
        @return: a Deferred firing with the object's
            L{StoredObject} once it exists.
        """

    def copyObject(  # type: ignore[no-untyped-def]
        source, destination, etag, size, metadata, settings, exclusive=False
    ):
        """
        Copy an object inside the bucket (on the server: no byte passes
        through the gateway), giving the copy C{metadata}, provided the
        source still has ETag C{etag}.  C{source} and C{destination} may
        be the same key: that replaces the object's metadata.

        Objects larger than one copy request allows (5 GiB on S3) are
        copied as a multipart upload of ranges; if that fails, nothing is
        left at C{destination} but what was there before.

        @param source: the key copied.
        @param destination: the key written, replacing any object there.
        @param etag: the ETag C{source} must have.
        @param size: its size in bytes.
        @param metadata: the copy's user metadata.
        @param settings: the copy's storage class and encryption (the
            source's, as its L{ObjectInfo} reports them, to keep them);
            its tags are the source's.
        @param exclusive: copy only if no object is at C{destination}
            (C{If-None-Match: *}); otherwise fail with
            L{twisted_s3sftp.errors.FileExists}.
        @return: a Deferred firing with the copy's
            L{StoredObject}; it fails with
            L{twisted_s3sftp.errors.Changed} if the source is gone or no
            longer has C{etag}.
        """

    def abortMultipartUpload(key, uploadId):  # type: ignore[no-untyped-def]
        """
        Discard an unfinished upload and its parts.

        @param key: the upload's object key.
        @param uploadId: from L{createMultipartUpload}.
        @return: a Deferred firing with L{None}.
        """

    def deleteObject(key):  # type: ignore[no-untyped-def]
        """
        @param key: an object key; deleting a missing key is not an error.
        @return: a Deferred firing with L{None}.
        """
