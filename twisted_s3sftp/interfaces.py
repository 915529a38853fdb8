"""
The seam between the SFTP layer and object storage.

L{IObjectStore} is implemented over boto3 by L{twisted_s3sftp.s3} and in
memory by L{twisted_s3sftp.memory}.  Every method returns a Deferred; on
failure it fails with a L{twisted_s3sftp.errors.GatewayError}.
"""

from __future__ import annotations

from zope.interface import Interface


class IObjectStore(Interface):
    """
    One bucket of an S3-like object store.
    """

    def headObject(key):  # type: ignore[no-untyped-def]
        """
        @param key: an object key.
        @return: a Deferred firing with its
            L{twisted_s3sftp.listing.ObjectInfo}, or L{None} if there is no
            such object.
        """

    def listDirectory(prefix, limit):  # type: ignore[no-untyped-def]
        """
        List what is directly under C{prefix}, C{/} being the delimiter.

        @param prefix: a key prefix, empty or ending in C{/}.
        @param limit: the most entries (objects plus prefixes) wanted; the
            store may return fewer but never more.
        @return: a Deferred firing with a
            L{twisted_s3sftp.listing.ObjectListing}.
        """

    def putObject(key, data, metadata=None):  # type: ignore[no-untyped-def]
        """
        Store a whole object at once, replacing any object at C{key}.  The
        body is sent with a checksum the store verifies.

        @param key: the object key.
        @param data: its bytes.
        @param metadata: user metadata (C{x-amz-meta-*}), or L{None}.
        @return: a Deferred firing with L{None} once the object is stored.
        """

    def createMultipartUpload(key):  # type: ignore[no-untyped-def]
        """
        @param key: the object key the upload will create.
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
            L{twisted_s3sftp.upload.StoredPart}.
        """

    def completeMultipartUpload(key, uploadId, parts):  # type: ignore[no-untyped-def]
        """
        Make the object visible from its parts.

        @param key: the upload's object key.
        @param uploadId: from L{createMultipartUpload}.
        @param parts: every L{twisted_s3sftp.upload.StoredPart}, in any
            order.
        @return: a Deferred firing with the object's ETag once it exists.
        """

    def replaceMetadata(key, etag, size, metadata):  # type: ignore[no-untyped-def]
        """
        Replace the user metadata of an object (a server-side copy onto
        itself), provided it still has ETag C{etag}.

        @param key: the object key.
        @param etag: the ETag it must have.
        @param size: its size in bytes.
        @param metadata: the new user metadata.
        @return: a Deferred firing with L{None}.
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
