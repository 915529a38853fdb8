"""
L{twisted_s3sftp.store.s3.S3ObjectStore} against a real S3, for what the SFTP
tests cannot reach cheaply: copies of objects larger than one copy
request takes, paged listings, ranged reads and their edge cases.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import boto3
import pytest
from attrs import evolve
from botocore.utils import parse_timestamp
from twisted.internet.defer import Deferred
from zope.interface.verify import verifyObject

from twisted_s3sftp.errors import Changed, EndOfFile, FileExists, GatewayError, StoreError
from twisted_s3sftp.store.interfaces import IObjectStore, ObjectSettings
from twisted_s3sftp.store.s3 import S3ObjectStore, makeClient, parseTimestamp
from twisted_s3sftp.tools.seaweedfs import ACCESS_KEY, REGION, SECRET_KEY

from .conftest import MiB, keys, multipartUploads, objectBytes

#: No settings: the bucket's defaults.
NONE = ObjectSettings()


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
            result(store.copyObject("big", destination, '"0123"', len(data), {"sha256": "x"}, NONE))
        except Changed:
            pass
        else:
            raise AssertionError("a copy with a stale ETag was accepted")
    assert s3.head_object(Bucket=bucket, Key="big")["Metadata"] == {"old": "1"}
    assert keys(s3, bucket) == ["big"]
    assert multipartUploads(s3, bucket) == []

    result(store.copyObject("big", "copy", etag, len(data), {"sha256": "abc"}, NONE))
    assert objectBytes(s3, bucket, "copy") == data
    assert s3.head_object(Bucket=bucket, Key="copy")["Metadata"] == {"sha256": "abc"}
    result(store.copyObject("big", "big", etag, len(data), {"sha256": "abc"}, NONE))
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
    result(store.copyObject("a", "b", info.etag, 3, info.metadata, info.settings))
    assert objectBytes(s3, bucket, "b") == b"abc"
    assert result(store.headObject("b")).metadata == {"mtime": "5"}
    try:
        result(store.copyObject("gone", "c", info.etag, 3, {}, NONE))
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


def test_listingStartAfter(localS3: Any, bucket: str, s3: Any) -> None:
    """
    A listing started after a key (the directory cache's page at a name,
    L{twisted_s3sftp.store.dircache.startAfter}) holds the entries after
    it, the name itself first, its sub-directories among them; a name
    that is both a file and a directory's prefix is found either way.
    """
    store = makeStore(localS3, bucket, 5 * MiB)
    for key in ("p/a0", "p/m5", "p/m6", "p/m7/inner", "p/z", "p/m5/inner"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    page = result(store.listDirectory("p/", 1000, startAfter="p/m"))
    assert [info.key for info in page.objects] == ["p/m5", "p/m6", "p/z"]
    assert set(page.prefixes) == {"p/m5/", "p/m7/"}
    assert page.token is None
    short = result(store.listDirectory("p/", 2, startAfter="p/m"))
    assert [info.key for info in short.objects][:1] == ["p/m5"]
    assert short.token is not None
    assert result(store.listDirectory("p/", 1000, startAfter="p/")).objects[0].key == "p/a0"


def test_timestampsAsBotocore(localS3: Any, bucket: str, s3: Any) -> None:
    """
    The times the gateway's client reads from S3 (a listing's, a HEAD's)
    are the times a plain boto3 client reads, to the second, parsed by
    L{twisted_s3sftp.store.s3.parseTimestamp}; timestamps of other forms
    are parsed as botocore parses them.
    """
    store = makeStore(localS3, bucket, 5 * MiB)
    s3.put_object(Bucket=bucket, Key="times/one", Body=b"x")
    plain = boto3.session.Session().client(
        "s3",
        endpoint_url=localS3.endpointURL,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    )
    listed = plain.list_objects_v2(Bucket=bucket, Prefix="times/")["Contents"][0]
    headed = plain.head_object(Bucket=bucket, Key="times/one")
    (info,) = result(store.listDirectory("times/", 1000)).objects
    assert info.mtime == int(listed["LastModified"].timestamp())
    head = result(store.headObject("times/one"))
    assert head is not None and head.mtime == int(headed["LastModified"].timestamp())
    for value in (
        "2026-12-03T16:41:28.123Z",
        "2026-12-03T16:41:28Z",
        "Thu, 03 Dec 2026 16:41:28 GMT",
        "2026-12-03 16:41:28",
        "1796316088",
        1796316088,
    ):
        assert parseTimestamp(value) == parse_timestamp(value), value


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


def test_exclusiveWrites(localS3: Any, bucket: str, s3: Any) -> None:
    """
    An exclusive PutObject or CompleteMultipartUpload (C{If-None-Match:
    *}) over an existing object fails with L{FileExists} and leaves it;
    where no object is, it stores.  SeaweedFS answers 412 to both.
    """
    store = makeStore(localS3, bucket, 5 * MiB)
    result(store.putObject("x", b"first", None, None, True))
    with pytest.raises(FileExists):
        result(store.putObject("x", b"second", None, None, True))
    assert objectBytes(s3, bucket, "x") == b"first"
    uploadId = result(store.createMultipartUpload("x"))
    part = result(store.uploadPart("x", uploadId, 1, b"y" * (5 * MiB)))
    with pytest.raises(FileExists):
        result(store.completeMultipartUpload("x", uploadId, [part], True))
    assert objectBytes(s3, bucket, "x") == b"first"
    result(store.abortMultipartUpload("x", uploadId))
    uploadId = result(store.createMultipartUpload("y"))
    part = result(store.uploadPart("y", uploadId, 1, b"y" * (5 * MiB)))
    result(store.completeMultipartUpload("y", uploadId, [part], True))
    assert len(objectBytes(s3, bucket, "y")) == 5 * MiB
    assert multipartUploads(s3, bucket) == []


def test_settingsKept(localS3: Any, bucket: str, s3: Any) -> None:
    """
    Objects are stored with the settings given, HEAD reports them, and a
    copy in parts (over the copy size) keeps the class, the encryption
    and the tags (read with GetObjectTagging).
    """
    store = makeStore(localS3, bucket, 5 * MiB)
    settings = ObjectSettings("STANDARD_IA", "AES256", None, [("partner", "acme")])
    result(store.putObject("s", b"small", {"m": "1"}, settings))
    info = result(store.headObject("s"))
    assert info.settings == ObjectSettings("STANDARD_IA", "AES256")
    data = os.urandom(11 * MiB)
    uploadId = result(store.createMultipartUpload("big", settings))
    parts = [
        result(store.uploadPart("big", uploadId, 1, data[: 6 * MiB])),
        result(store.uploadPart("big", uploadId, 2, data[6 * MiB :])),
    ]
    result(store.completeMultipartUpload("big", uploadId, parts))
    info = result(store.headObject("big"))
    result(store.copyObject("big", "moved", info.etag, len(data), {"m": "2"}, info.settings))
    head = s3.head_object(Bucket=bucket, Key="moved")
    assert (head.get("StorageClass"), head.get("ServerSideEncryption")) == ("STANDARD_IA", "AES256")
    tags = s3.get_object_tagging(Bucket=bucket, Key="moved")["TagSet"]
    assert tags == [{"Key": "partner", "Value": "acme"}]
    assert objectBytes(s3, bucket, "moved") == data


def test_exclusiveCopy(localS3: Any, bucket: str, s3: Any) -> None:
    """
    An exclusive copy (a rename to a free name) onto an existing object
    fails with L{FileExists} and leaves it; SeaweedFS honours
    C{If-None-Match: *} on CopyObject too.
    """
    store = makeStore(localS3, bucket, 5 * MiB)
    s3.put_object(Bucket=bucket, Key="src", Body=b"source")
    s3.put_object(Bucket=bucket, Key="taken", Body=b"taken")
    info = result(store.headObject("src"))
    with pytest.raises(FileExists):
        result(store.copyObject("src", "taken", info.etag, 6, {}, NONE, True))
    assert objectBytes(s3, bucket, "taken") == b"taken"
    result(store.copyObject("src", "free", info.etag, 6, {}, NONE, True))
    assert objectBytes(s3, bucket, "free") == b"source"
    # S3 answers 412 for a changed source too: that is told apart.
    s3.put_object(Bucket=bucket, Key="src", Body=b"changed")
    with pytest.raises(Changed):
        result(store.copyObject("src", "free2", info.etag, 6, {}, NONE, True))
    assert keys(s3, bucket, "free2") == []


def test_compareAndSwap(localS3: Any, bucket: str) -> None:
    """
    A write with C{ifMatch} lands only over the object with that ETag
    (what claims a parked upload's lease): a stale ETag, or no object, is
    refused, and the object is unchanged.
    """
    store = makeStore(localS3, bucket, 5 * MiB)
    first = result(store.putObject("lease", b"one"))
    second = result(store.putObject("lease", b"two", ifMatch=first.etag))
    with pytest.raises(Changed):
        result(store.putObject("lease", b"three", ifMatch=first.etag))
    with pytest.raises(GatewayError):
        result(store.putObject("missing", b"x", ifMatch=first.etag))
    info = result(store.headObject("lease"))
    assert (info.etag, result(store.getObject("lease", 0, 10, info.etag))) == (
        second.etag,
        b"two",
    )


def test_listPartsPaged(localS3: Any, bucket: str, s3: Any) -> None:
    """
    L{S3ObjectStore.listParts} gives every part of an upload, over more
    than one page of 1,000, with their sizes (SeaweedFS refuses to
    complete parts under 5 MiB, so these are only listed); an upload
    completed from listed parts and a new last part is their
    concatenation.  SeaweedFS's listing has no checksums, yet completing
    without them is refused (C{InvalidRequest}): that is why leases keep
    them.  A gone upload is C{NoSuchUpload}.
    """
    store = makeStore(localS3, bucket, 5 * MiB)
    uploadId = result(store.createMultipartUpload("many"))
    for number in range(1, 1004):
        result(store.uploadPart("many", uploadId, number, b"p"))
    listed = result(store.listParts("many", uploadId))
    assert [(p.number, p.size) for p in listed] == [(n, 1) for n in range(1, 1004)]
    result(store.abortMultipartUpload("many", uploadId))
    uploadId = result(store.createMultipartUpload("two"))
    parts = [os.urandom(5 * MiB) for _ in range(2)]
    stored = [
        result(store.uploadPart("two", uploadId, number, data))
        for number, data in enumerate(parts, 1)
    ]
    listed = result(store.listParts("two", uploadId))
    assert [p.etag for p in listed] == [p.etag for p in stored]
    assert [p.checksum for p in listed] == [None, None]
    last = result(store.uploadPart("two", uploadId, 3, b"tail"))
    with pytest.raises(StoreError):
        result(store.completeMultipartUpload("two", uploadId, [*listed, last]))
    withChecksums = [evolve(p, checksum=s.checksum) for p, s in zip(listed, stored, strict=True)]
    result(store.completeMultipartUpload("two", uploadId, [*withChecksums, last]))
    assert objectBytes(s3, bucket, "two") == b"".join(parts) + b"tail"
    with pytest.raises(StoreError) as raised:
        result(store.listParts("two", uploadId))
    assert raised.value.storeCode == "NoSuchUpload"


def test_putWithoutContinue(localS3: Any, bucket: str, s3: Any) -> None:
    """
    A PutObject is sent without C{Expect: 100-continue} (its body goes
    with its headers, saving a round trip per small file); an UploadPart
    keeps it; both are stored intact.
    """
    store = makeStore(localS3, bucket, 5 * MiB)
    sent: dict[str, str | None] = {}

    def record(request: Any, event_name: str, **kwargs: Any) -> None:
        sent[event_name.rsplit(".", 1)[-1]] = request.headers.get("Expect")

    store.client.meta.events.register("before-send.s3", record)
    result(store.putObject("small.txt", b"small file\n"))
    uploadId = result(store.createMultipartUpload("big.bin", NONE))
    part = os.urandom(5 * MiB)
    stored = result(store.uploadPart("big.bin", uploadId, 1, part))
    result(store.completeMultipartUpload("big.bin", uploadId, [stored]))
    assert sent["PutObject"] is None
    assert sent["UploadPart"] in (b"100-continue", "100-continue")
    assert objectBytes(s3, bucket, "small.txt") == b"small file\n"
    assert objectBytes(s3, bucket, "big.bin") == part
