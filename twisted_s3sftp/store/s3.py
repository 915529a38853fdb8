"""
L{IObjectStore} over boto3: the only module that imports it.

Every boto3 call runs on a thread pool the service owns (never the
reactor's, which also serves DNS), through the one helper
L{S3ObjectStore._inThread}, which also translates boto3's exceptions into
L{twisted_s3sftp.errors}.  One boto3 client is built up front and shared:
boto3 clients are thread-safe, and its connection pool is sized to the
thread pool.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar
from urllib.parse import urlencode

import boto3
import botocore.session
from attrs import define
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from botocore.utils import parse_timestamp
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from ..errors import (
    Changed,
    EndOfFile,
    FileExists,
    GatewayError,
    NoSuchFile,
    PermissionDenied,
    StoreError,
)
from .checksums import crc32
from .interfaces import (
    IObjectStore,
    ObjectInfo,
    ObjectListing,
    ObjectSettings,
    StoredObject,
    StoredPart,
)
from .parts import MAX_PART_SIZE

T = TypeVar("T")

_MISSING = {"NoSuchKey", "NotFound", "404", "NoSuchBucket"}
_DENIED = {
    "AccessDenied",
    "403",
    "AllAccessDisabled",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
}
_CHANGED = {"PreconditionFailed", "412"}
#: What S3 answers a conditional write (C{If-None-Match: *}) when an object
#: exists: 412, or 409 when another conditional write to it is under way.
_EXISTS = _CHANGED | {"ConditionalRequestConflict", "409"}
_RANGE = {"InvalidRange", "416"}

#: Parts asked for per ListParts page (S3's most).
PAGE = 1000


def makeClient(
    endpointURL: str | None,
    region: str | None,
    maxConnections: int,
    credentials: tuple[str, str] | None = None,
) -> Any:
    """
    Build the one boto3 S3 client.

    The server takes credentials only from boto3's own chain (environment,
    shared profile, instance role); there is deliberately no command-line
    option for them.  C{credentials} is for local development tooling.

    @param endpointURL: an S3-compatible endpoint, or L{None} for AWS.
    @param region: the region, or L{None} for boto3's default.
    @param maxConnections: the HTTP connection pool size; at least the
        number of threads that may call the client at once.
    @return: a botocore S3 client.
    """
    config = Config(
        # Transient errors (500, 503 SlowDown, resets, timeouts) are retried
        # with capped exponential backoff and jitter; botocore's default
        # "legacy" mode retries far fewer of them.
        retries={"mode": "standard", "max_attempts": 5},
        max_pool_connections=maxConnections,
        connect_timeout=10,
        read_timeout=60,
        # Every upload carries its own CRC32 (S3 refuses a body that does
        # not match it), so the SigV4 signature need not hash the payload
        # as well: that would cost another pass over every byte.
        s3={"payload_signing_enabled": False},
        request_checksum_calculation="when_required",
        # Every parameter is built here from values the gateway already
        # checked; validating them again costs a tenth of each request's
        # CPU (measured: 1.1 against 1.25 ms for a small PutObject).
        parameter_validation=False,
    )
    accessKey, secretKey = credentials if credentials is not None else (None, None)
    core = botocore.session.get_session()
    core.get_component("response_parser_factory").set_parser_defaults(
        timestamp_parser=parseTimestamp
    )
    client = boto3.session.Session(botocore_session=core).client(
        "s3",
        endpoint_url=endpointURL,
        region_name=region,
        config=config,
        aws_access_key_id=accessKey,
        aws_secret_access_key=secretKey,
    )
    # Last among botocore's own "before-call.s3" handlers: after the one
    # that adds the header.
    client.meta.events.register_last("before-call.s3", _noContinueForPut)
    return client


def parseTimestamp(value: Any) -> Any:
    """
    Parse a timestamp in an S3 answer, as botocore's own parser does.

    botocore parses every timestamp with C{dateutil}, which took seven
    tenths of the CPU of reading a page of a listing (one per entry: a
    1,000-entry ListObjectsV2 took 81 to 84 ms of CPU with it, 22 to 28
    without, measured in-process against SeaweedFS).  S3 writes them in ISO 8601
    (C{2026-12-03T16:41:28.123Z}, in listings) or RFC 1123 (C{Last-Modified}
    headers), which Python's standard library reads directly; anything else,
    or a time without a zone, goes to botocore's parser as before.  Given
    to botocore through its documented C{timestamp_parser} default.

    @param value: the timestamp as S3 sent it.
    @return: a timezone-aware L{datetime}, as botocore's parser returns.
    """
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value) if "T" in value else parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            parsed = None
        if parsed is not None and parsed.tzinfo is not None:
            return parsed
    return parse_timestamp(value)


def _noContinueForPut(model: Any, params: dict[str, Any], **kwargs: Any) -> None:
    """
    Send a PutObject's body with its headers, without botocore's
    C{Expect: 100-continue}.

    botocore asks every PUT with a body to wait for S3's C{100 Continue}
    before sending it: one more round trip per request, and botocore reads
    that interim answer a byte at a time.  The gateway's PutObject bodies
    are small (a file smaller than the first part; larger ones go in
    parts, which keep the header, since a refused 8 MiB part is worth not
    sending): a small file's upload then takes 0.1 to 0.4 ms less, and
    0.1 to 0.2 ms less CPU (measured against SeaweedFS, 4 KiB bodies).
    """
    if model.name == "PutObject":
        params["headers"].pop("Expect", None)


def translate(error: Exception, sourceGone: str | None = None) -> GatewayError:
    """
    Translate a boto3 exception into the gateway's own.

    @param error: what boto3 raised.
    @param sourceGone: for a request that names an object's ETag (a
        ranged read, a copy): the message of the L{Changed} raised when
        that object is gone or no longer has it.
    @return: the matching L{GatewayError}; its message is safe to show a
        client and names S3's error code, never the bucket or credentials.
    """
    if isinstance(error, ClientError):
        code = str(error.response.get("Error", {}).get("Code", "Unknown"))
        if sourceGone is not None and code in _MISSING | _CHANGED:
            return Changed(sourceGone)
        if code in _CHANGED:
            return Changed("the file changed meanwhile")
        if code in _RANGE:
            return EndOfFile("end of file")
        if code in _MISSING:
            return NoSuchFile("no such file")
        if code in _DENIED:
            return PermissionDenied(f"S3 refused the request ({code})")
        return StoreError(f"S3 error: {code}", code)
    if isinstance(error, BotoCoreError):
        return StoreError("S3 is unreachable", type(error).__name__)
    return StoreError("S3 request failed", type(error).__name__)


def settingsArguments(settings: ObjectSettings | None, tags: bool = True) -> dict[str, str]:
    """
    @param settings: how an object is to be stored.
    @param tags: whether to send its tags (a copy keeps the source's).
    @return: the boto3 arguments that ask for it.
    """
    if settings is None:
        return {}
    arguments = {}
    if settings.storageClass is not None:
        arguments["StorageClass"] = settings.storageClass
    if settings.sse is not None:
        arguments["ServerSideEncryption"] = settings.sse
    if settings.sseKmsKeyId is not None:
        arguments["SSEKMSKeyId"] = settings.sseKmsKeyId
    if tags and settings.tags:
        arguments["Tagging"] = urlencode(settings.tags)
    return arguments


def _conditional(
    exclusive: bool, call: Callable[..., T], ifMatch: str | None = None, **arguments: Any
) -> T:
    """
    Make a write that, if C{exclusive}, happens only where no object is;
    with C{ifMatch}, only over the object with that ETag.

    @raise FileExists: if C{exclusive} and an object is there.
    @raise ClientError: a 412 if C{ifMatch} is no longer the ETag (which
        L{translate} makes L{Changed}).
    """
    if ifMatch is not None:
        return call(IfMatch=ifMatch, **arguments)
    if not exclusive:
        return call(**arguments)
    try:
        return call(IfNoneMatch="*", **arguments)
    except ClientError as e:
        if str(e.response.get("Error", {}).get("Code", "")) in _EXISTS:
            raise FileExists("a file with that name already exists") from e
        raise


def checkBucket(client: Any, bucket: str) -> None:
    """
    Check, before the server starts, that C{bucket} can be reached.

    @param client: from L{makeClient}.
    @param bucket: the bucket name.
    @raise ValueError: with a one-line reason, if it cannot.
    """
    try:
        client.head_bucket(Bucket=bucket)
    except ClientError as e:
        code = str(e.response.get("Error", {}).get("Code", "Unknown"))
        if code in ("404", "NoSuchBucket", "NotFound"):
            raise ValueError(f"bucket {bucket!r} does not exist") from None
        if code in _DENIED:
            raise ValueError(f"access to bucket {bucket!r} denied ({code})") from None
        raise ValueError(f"bucket {bucket!r} is not usable ({code})") from None
    except BotoCoreError as e:
        raise ValueError(f"cannot reach S3: {e}") from None


@implementer(IObjectStore)
@define(eq=False)
class S3ObjectStore:
    """
    One S3 bucket, every call on the service's thread pool.

    @ivar client: from L{makeClient}.
    @ivar bucket: the bucket name.
    @ivar reactor: the reactor the results are delivered on.
    @ivar pool: the thread pool boto3 runs on.
    @ivar maxCopySize: the largest object L{copyObject} copies in one
        request (S3's limit); larger ones are copied in parts this big.
    @ivar observe: called in the worker thread after every S3 call with
        its operation name, C{"ok"} or C{"error"}, and its duration in
        seconds (L{twisted_s3sftp.ops.metrics}).
    @ivar timer: the monotonic clock those durations are read from.
    """

    client: Any
    bucket: str
    reactor: IReactorFromThreads
    pool: ThreadPool
    maxCopySize: int = MAX_PART_SIZE
    observe: Callable[[str, str, float], None] | None = None
    timer: Callable[[], float] = time.monotonic

    def _inThread(
        self, operation: str, call: Callable[[], T], sourceGone: str | None = None
    ) -> Deferred[T]:
        """
        Run C{call} on the thread pool, translating its errors and, with
        an L{observe} callback, reporting its outcome and duration.

        @param operation: the S3 operation's name, for metrics.
        """

        def translated() -> T:
            started = self.timer()
            outcome = "error"
            try:
                result = call()
                outcome = "ok"
                return result
            except (ClientError, BotoCoreError) as e:
                raise translate(e, sourceGone) from e
            finally:
                if self.observe is not None:
                    self.observe(operation, outcome, self.timer() - started)

        return deferToThreadPool(self.reactor, self.pool, translated)

    def headObject(self, key: str) -> Deferred[ObjectInfo | None]:
        def head() -> ObjectInfo | None:
            try:
                response = self.client.head_object(Bucket=self.bucket, Key=key)
            except ClientError as e:
                if translate(e).__class__ is NoSuchFile:
                    return None
                raise
            return ObjectInfo(
                key,
                int(response["ContentLength"]),
                int(response["LastModified"].timestamp()),
                str(response.get("ETag", "")),
                dict(response.get("Metadata", {})),
                ObjectSettings(
                    response.get("StorageClass"),
                    response.get("ServerSideEncryption"),
                    response.get("SSEKMSKeyId"),
                ),
            )

        return self._inThread("HeadObject", head)

    def listDirectory(
        self, prefix: str, limit: int, token: str | None = None, startAfter: str | None = None
    ) -> Deferred[ObjectListing]:
        def listing() -> ObjectListing:
            # Each request asks for no more than is still wanted, so the
            # continuation token S3 returns is exactly where the next call
            # must start: nothing is skipped or listed twice.
            objects: list[ObjectInfo] = []
            prefixes: list[str] = []
            nextToken = token
            start = {} if startAfter is None else {"StartAfter": startAfter}
            while len(objects) + len(prefixes) < limit:
                page = self.client.list_objects_v2(
                    Bucket=self.bucket,
                    Prefix=prefix,
                    Delimiter="/",
                    MaxKeys=min(1000, limit - len(objects) - len(prefixes)),
                    **({"ContinuationToken": nextToken} if nextToken else start),
                )
                for item in page.get("Contents", ()):
                    objects.append(
                        ObjectInfo(
                            item["Key"],
                            int(item["Size"]),
                            int(item["LastModified"].timestamp()),
                            str(item.get("ETag", "")),
                        )
                    )
                prefixes.extend(p["Prefix"] for p in page.get("CommonPrefixes", ()))
                nextToken = page.get("NextContinuationToken") if page.get("IsTruncated") else None
                if nextToken is None:
                    break
            return ObjectListing(objects, prefixes, nextToken)

        return self._inThread("ListObjectsV2", listing)

    def getObject(self, key: str, start: int, length: int, etag: str) -> Deferred[bytes]:
        def get() -> bytes:
            response = self.client.get_object(
                Bucket=self.bucket,
                Key=key,
                Range=f"bytes={start}-{start + length - 1}",
                IfMatch=etag,
            )
            body = response["Body"]
            try:
                return bytes(body.read())
            finally:
                body.close()

        return self._inThread("GetObject", get, "the file changed while it was being read")

    def putObject(
        self,
        key: str,
        data: bytes,
        metadata: dict[str, str] | None = None,
        settings: ObjectSettings | None = None,
        exclusive: bool = False,
        ifMatch: str | None = None,
    ) -> Deferred[StoredObject]:
        def put() -> StoredObject:
            # An empty object is sent without a Body: botocore would add
            # "Expect: 100-continue" to an empty body, and SeaweedFS then
            # leaves the connection stalled for the next request (4.48).
            body = {"Body": data, "ChecksumCRC32": crc32(data)} if data else {}
            return _stored(
                _conditional(
                    exclusive,
                    self.client.put_object,
                    ifMatch,
                    Bucket=self.bucket,
                    Key=key,
                    Metadata=metadata or {},
                    **settingsArguments(settings),
                    **body,
                )
            )

        return self._inThread("PutObject", put)

    def createMultipartUpload(
        self, key: str, settings: ObjectSettings | None = None
    ) -> Deferred[str]:
        return self._inThread(
            "CreateMultipartUpload",
            lambda: str(
                self.client.create_multipart_upload(
                    Bucket=self.bucket,
                    Key=key,
                    ChecksumAlgorithm="CRC32",
                    **settingsArguments(settings),
                )["UploadId"]
            ),
        )

    def uploadPart(self, key: str, uploadId: str, number: int, data: bytes) -> Deferred[StoredPart]:
        def upload() -> StoredPart:
            checksum = crc32(data)
            response = self.client.upload_part(
                Bucket=self.bucket,
                Key=key,
                UploadId=uploadId,
                PartNumber=number,
                Body=data,
                ChecksumCRC32=checksum,
            )
            return StoredPart(number, str(response["ETag"]), checksum)

        return self._inThread("UploadPart", upload)

    def uploadPartCopy(
        self, key: str, uploadId: str, number: int, source: str, etag: str, start: int, stop: int
    ) -> Deferred[StoredPart]:
        def copy() -> StoredPart:
            response = self.client.upload_part_copy(
                Bucket=self.bucket,
                Key=key,
                UploadId=uploadId,
                PartNumber=number,
                CopySource={"Bucket": self.bucket, "Key": source},
                CopySourceIfMatch=etag,
                CopySourceRange=f"bytes={start}-{stop - 1}",
            )
            result = response["CopyPartResult"]
            return StoredPart(
                number, _quoted(str(result["ETag"])), result.get("ChecksumCRC32"), stop - start
            )

        return self._inThread("UploadPartCopy", copy, "the file changed while it was appended to")

    def listParts(self, key: str, uploadId: str) -> Deferred[list[StoredPart]]:
        def listing() -> list[StoredPart]:
            parts: list[StoredPart] = []
            marker = 0
            while True:
                response = self.client.list_parts(
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=uploadId,
                    PartNumberMarker=marker,
                    MaxParts=PAGE,
                )
                for part in response.get("Parts", ()):
                    parts.append(
                        StoredPart(
                            int(part["PartNumber"]),
                            str(part["ETag"]),
                            part.get("ChecksumCRC32"),
                            int(part["Size"]),
                        )
                    )
                following = int(response.get("NextPartNumberMarker") or 0)
                if not response.get("IsTruncated") or following <= marker:
                    return sorted(parts, key=lambda part: part.number)
                marker = following

        return self._inThread("ListParts", listing)

    def completeMultipartUpload(
        self, key: str, uploadId: str, parts: list[StoredPart], exclusive: bool = False
    ) -> Deferred[StoredObject]:
        listed = [
            {"PartNumber": part.number, "ETag": part.etag}
            | ({"ChecksumCRC32": part.checksum} if part.checksum else {})
            for part in sorted(parts, key=lambda part: part.number)
        ]
        return self._inThread(
            "CompleteMultipartUpload",
            lambda: _stored(
                _conditional(
                    exclusive,
                    self.client.complete_multipart_upload,
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=uploadId,
                    MultipartUpload={"Parts": listed},
                )
            ),
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
        copySource = {"Bucket": self.bucket, "Key": source}
        # S3 gives a copy the STANDARD class and the bucket's default
        # encryption unless told otherwise: the source's are sent again.
        # Its tags are copied (TaggingDirective's default, COPY).
        kept = settingsArguments(settings, tags=False)

        def copy() -> StoredObject:
            # Copied only if the source is still the object the caller saw
            # (CopySourceIfMatch).
            if size <= self.maxCopySize:
                response = self._exclusiveCopy(
                    exclusive,
                    source,
                    etag,
                    Bucket=self.bucket,
                    Key=destination,
                    CopySource=copySource,
                    CopySourceIfMatch=etag,
                    MetadataDirective="REPLACE",
                    Metadata=metadata,
                    **kept,
                )
                return StoredObject(
                    _quoted(str(response.get("CopyObjectResult", {}).get("ETag", ""))),
                    response.get("VersionId"),
                )
            # A multipart copy starts a new object: the tags are read and
            # given to it.
            tagSet = self.client.get_object_tagging(Bucket=self.bucket, Key=source)["TagSet"]
            tagging = {"Tagging": urlencode([(t["Key"], t["Value"]) for t in tagSet])}
            uploadId = self.client.create_multipart_upload(
                Bucket=self.bucket,
                Key=destination,
                Metadata=metadata,
                **kept,
                **(tagging if tagSet else {}),
            )["UploadId"]
            try:
                parts = []
                for number, start in enumerate(range(0, size, self.maxCopySize), 1):
                    stop = min(size, start + self.maxCopySize) - 1
                    response = self.client.upload_part_copy(
                        Bucket=self.bucket,
                        Key=destination,
                        UploadId=uploadId,
                        PartNumber=number,
                        CopySource=copySource,
                        CopySourceIfMatch=etag,
                        CopySourceRange=f"bytes={start}-{stop}",
                    )
                    parts.append({"PartNumber": number, "ETag": response["CopyPartResult"]["ETag"]})
                return _stored(
                    _conditional(
                        exclusive,
                        self.client.complete_multipart_upload,
                        Bucket=self.bucket,
                        Key=destination,
                        UploadId=uploadId,
                        MultipartUpload={"Parts": parts},
                    )
                )
            except Exception:
                try:
                    self.client.abort_multipart_upload(
                        Bucket=self.bucket, Key=destination, UploadId=uploadId
                    )
                except (ClientError, BotoCoreError):
                    pass  # The copy's own error is the one to report.
                raise

        return self._inThread("CopyObject", copy, "the file changed meanwhile")

    def _exclusiveCopy(self, exclusive: bool, source: str, etag: str, **arguments: Any) -> Any:
        """
        CopyObject, only where no object is if C{exclusive}.  S3 answers 412
        both when the destination exists and when the source no longer has
        its ETag: the source is looked at again to tell which.

        @raise FileExists: if the destination exists.
        @raise ClientError: (412) if the source changed.
        """
        try:
            return _conditional(exclusive, self.client.copy_object, **arguments)
        except FileExists:
            try:
                current = self.client.head_object(Bucket=self.bucket, Key=source)["ETag"]
            except ClientError:
                current = None
            if current != etag:
                raise Changed("the file changed meanwhile") from None
            raise

    def abortMultipartUpload(self, key: str, uploadId: str) -> Deferred[None]:
        return self._inThread(
            "AbortMultipartUpload",
            lambda: self._none(
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=uploadId)
            ),
        )

    def deleteObject(self, key: str) -> Deferred[None]:
        return self._inThread(
            "DeleteObject",
            lambda: self._none(self.client.delete_object(Bucket=self.bucket, Key=key)),
        )

    @staticmethod
    def _none(response: object) -> None:
        return None


def _stored(response: dict[str, Any]) -> StoredObject:
    """
    @return: the object a PutObject or CompleteMultipartUpload response
        describes.
    """
    return StoredObject(_quoted(str(response.get("ETag", ""))), response.get("VersionId"))


def _quoted(etag: str) -> str:
    """
    @return: C{etag} in double quotes, as S3 sends it in HEAD responses
        (SeaweedFS leaves a copy's result unquoted).
    """
    return etag if etag.startswith('"') or not etag else f'"{etag}"'
