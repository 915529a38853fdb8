"""
L{twisted_s3sftp.store.s3.S3ObjectStore} against a real S3, for what the SFTP
tests cannot reach cheaply: copies of objects larger than one copy
request takes, paged listings, ranged reads and their edge cases.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from zope.interface.verify import verifyObject

from twisted_s3sftp.errors import Changed, EndOfFile
from twisted_s3sftp.store.interfaces import IObjectStore
from twisted_s3sftp.store.s3 import S3ObjectStore, makeClient
from twisted_s3sftp.tools.seaweedfs import ACCESS_KEY, REGION, SECRET_KEY

from .conftest import MiB, keys, multipartUploads, objectBytes


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


def test_copyInParts(localS3: Any, bucket: str, s3: Any) -> None:
    """
    An object larger than one copy request is copied in ranges, onto
    itself (new metadata) or to another key (a rename): its bytes are
    unchanged and no multipart upload is left; with a stale ETag the copy
    is refused with L{Changed}, and nothing changes.
    """
    store = makeStore(localS3, bucket, 5 * MiB)
    data = os.urandom(12 * MiB + 3)
    s3.put_object(Bucket=bucket, Key="big", Body=data, Metadata={"old": "1"})
    etag = s3.head_object(Bucket=bucket, Key="big")["ETag"]

    for destination in ("big", "copy"):
        try:
            result(store.copyObject("big", destination, '"0123"', len(data), {"sha256": "x"}))
        except Changed:
            pass
        else:
            raise AssertionError("a copy with a stale ETag was accepted")
    assert s3.head_object(Bucket=bucket, Key="big")["Metadata"] == {"old": "1"}
    assert keys(s3, bucket) == ["big"]
    assert multipartUploads(s3, bucket) == []

    result(store.copyObject("big", "copy", etag, len(data), {"sha256": "abc"}))
    assert objectBytes(s3, bucket, "copy") == data
    assert s3.head_object(Bucket=bucket, Key="copy")["Metadata"] == {"sha256": "abc"}
    result(store.copyObject("big", "big", etag, len(data), {"sha256": "abc"}))
    assert objectBytes(s3, bucket, "big") == data
    assert s3.head_object(Bucket=bucket, Key="big")["Metadata"] == {"sha256": "abc"}
    assert multipartUploads(s3, bucket) == []


def test_interface(localS3: Any, bucket: str) -> None:
    """
    L{S3ObjectStore} provides every method of L{IObjectStore}.
    """
    assert verifyObject(IObjectStore, makeStore(localS3, bucket, 5 * MiB))


def test_copySmall(localS3: Any, bucket: str, s3: Any) -> None:
    """
    A small object is copied in one request with the metadata given; a
    missing source is L{Changed}.  HEAD reports the ETag and metadata.
    """
    store = makeStore(localS3, bucket, 5 * MiB)
    s3.put_object(Bucket=bucket, Key="a", Body=b"abc", Metadata={"mtime": "5"})
    info = result(store.headObject("a"))
    assert (info.size, info.metadata) == (3, {"mtime": "5"})
    assert info.etag == s3.head_object(Bucket=bucket, Key="a")["ETag"]
    result(store.copyObject("a", "b", info.etag, 3, info.metadata))
    assert objectBytes(s3, bucket, "b") == b"abc"
    assert result(store.headObject("b")).metadata == {"mtime": "5"}
    try:
        result(store.copyObject("gone", "c", info.etag, 3, {}))
    except Changed:
        pass
    else:
        raise AssertionError("a missing source was copied")
    assert result(store.headObject("c")) is None


def test_listingPages(localS3: Any, bucket: str, s3: Any) -> None:
    """
    Listing a directory a few entries at a time, each call continuing
    from the previous call's token, gives exactly the entries one full
    listing gives, in order, and ends with no token.
    """
    store = makeStore(localS3, bucket, 5 * MiB)
    for i in range(25):
        s3.put_object(Bucket=bucket, Key=f"d/f{i:02d}", Body=b"x")
    for sub in ("a", "m", "z"):
        s3.put_object(Bucket=bucket, Key=f"d/{sub}/inner", Body=b"x")
    whole = result(store.listDirectory("d/", 1000))
    assert whole.token is None
    assert len(whole.objects) == 25 and whole.prefixes == ("d/a/", "d/m/", "d/z/")
    objects: list[str] = []
    prefixes: list[str] = []
    token = None
    calls = 0
    while True:
        page = result(store.listDirectory("d/", 7, token))
        assert len(page.objects) + len(page.prefixes) <= 7
        objects.extend(info.key for info in page.objects)
        prefixes.extend(page.prefixes)
        calls += 1
        token = page.token
        if token is None:
            break
    assert objects == [info.key for info in whole.objects]
    assert prefixes == list(whole.prefixes)
    assert calls == 4
    assert all(info.etag for info in whole.objects)


def test_rangedReads(localS3: Any, bucket: str, s3: Any) -> None:
    """
    Ranged reads return exactly the bytes asked for, short at the end;
    reading at the end, or an empty object, is L{EndOfFile}; a changed or
    deleted object is L{Changed}.
    """
    store = makeStore(localS3, bucket, 5 * MiB)
    data = os.urandom(100_000)
    s3.put_object(Bucket=bucket, Key="f", Body=data)
    s3.put_object(Bucket=bucket, Key="empty")  # no Body: see s3.putObject
    etag = result(store.headObject("f")).etag
    assert result(store.getObject("f", 10, 1000, etag)) == data[10:1010]
    assert result(store.getObject("f", 99_000, 5000, etag)) == data[99_000:]
    for key, start, tag in [
        ("f", 100_000, etag),
        ("empty", 0, result(store.headObject("empty")).etag),
    ]:
        try:
            result(store.getObject(key, start, 10, tag))
        except EndOfFile:
            pass
        else:
            raise AssertionError(f"read past the end of {key}")
    s3.put_object(Bucket=bucket, Key="f", Body=b"new")
    for _ in range(2):
        try:
            result(store.getObject("f", 0, 10, etag))
        except Changed:
            pass
        else:
            raise AssertionError("read a changed object")
        s3.delete_object(Bucket=bucket, Key="f")
