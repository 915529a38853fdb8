"""
L{twisted_s3sftp.s3.S3ObjectStore} against a real S3, for what the SFTP
tests cannot reach cheaply: recording metadata on an object larger than
one copy request takes.
"""

from __future__ import annotations

import os
from typing import Any, Callable

from twisted.internet.defer import Deferred

from twisted_s3sftp.errors import StoreError
from twisted_s3sftp.s3 import S3ObjectStore, makeClient
from twisted_s3sftp.seaweedfs import ACCESS_KEY, REGION, SECRET_KEY

from .conftest import MiB, multipartUploads, objectBytes


class InlinePool:
    """
    A thread pool that runs each call at once, in the calling thread.
    """

    def callInThreadWithCallback(
        self, onResult: Callable[[bool, Any], None], function: Callable[..., Any], *args: Any
    ) -> None:
        try:
            result = function(*args)
        except BaseException as e:
            from twisted.python.failure import Failure

            onResult(False, Failure(e))
        else:
            onResult(True, result)


class InlineReactor:
    """
    A reactor whose C{callFromThread} runs the call at once.
    """

    def callFromThread(self, function: Callable[..., Any], *args: Any) -> None:
        function(*args)


def result(d: Deferred[Any]) -> Any:
    """
    @return: the result of a Deferred that has fired, raising its failure.
    """
    outcome: list[Any] = []
    d.addBoth(outcome.append)
    (value,) = outcome
    if hasattr(value, "raiseException"):
        value.raiseException()
    return value


def makeStore(localS3: Any, bucket: str, maxCopySize: int) -> S3ObjectStore:
    """
    @return: a store on C{bucket} whose calls run inline.
    """
    client = makeClient(localS3.endpointURL, REGION, 4, (ACCESS_KEY, SECRET_KEY))
    return S3ObjectStore(client, bucket, InlineReactor(), InlinePool(), maxCopySize)  # type: ignore[arg-type]


def test_replaceMetadataInParts(localS3: Any, bucket: str, s3: Any) -> None:
    """
    An object larger than one copy request is given new metadata by a
    multipart copy onto itself in ranges: its bytes are unchanged and no
    multipart upload is left; with a stale ETag the copy is refused and
    the object keeps its old metadata.
    """
    store = makeStore(localS3, bucket, 5 * MiB)
    data = os.urandom(12 * MiB + 3)
    s3.put_object(Bucket=bucket, Key="big", Body=data, Metadata={"old": "1"})
    etag = s3.head_object(Bucket=bucket, Key="big")["ETag"]

    try:
        result(store.replaceMetadata("big", '"0123"', len(data), {"sha256": "x"}))
    except StoreError:
        pass
    else:
        raise AssertionError("a copy with a stale ETag was accepted")
    assert s3.head_object(Bucket=bucket, Key="big")["Metadata"] == {"old": "1"}
    assert multipartUploads(s3, bucket) == []

    result(store.replaceMetadata("big", etag, len(data), {"sha256": "abc"}))
    assert objectBytes(s3, bucket, "big") == data
    assert s3.head_object(Bucket=bucket, Key="big")["Metadata"] == {"sha256": "abc"}
    assert multipartUploads(s3, bucket) == []
