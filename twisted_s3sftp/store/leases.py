"""
The orphan sweep: multipart uploads this server started and nobody
finished are aborted, so that a crash or a C{kill -9} never leaves parts
billed for ever.

S3 lists unfinished multipart uploads but not their metadata, so an upload
is recognised as the server's own by a I{lease}: a small marker object
under the state prefix (C{--state-prefix}, default C{.s3sftp/uploads/},
outside every home), written when the multipart upload is created,
rewritten every quarter of C{--orphan-age} while the upload runs, and
deleted when it completes or is aborted.  A marker older than
C{--orphan-age} belongs to an upload nobody runs any more: the sweep, run
at start-up and then every half C{--orphan-age} by every server on the
bucket, aborts that upload and deletes the marker.  Multipart uploads
without a marker (other tools', or one whose marker could not be written)
are never touched; the bucket's C{AbortIncompleteMultipartUpload}
lifecycle rule is the backstop for those.
"""

from __future__ import annotations

import base64
import json

from attrs import define, field
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from ..errors import GatewayError, NoSuchFile
from .interfaces import IObjectStore, ObjectSettings

log = Logger()

#: Markers read per listing page.
PAGE = 1000


def markerKey(prefix: str, uploadId: str) -> str:
    """
    @return: the key of the marker of multipart upload C{uploadId}.
    """
    name = base64.urlsafe_b64encode(uploadId.encode("utf-8")).decode("ascii")
    return prefix + name


def encodeMarker(key: str, uploadId: str) -> bytes:
    """
    @return: a marker's body.
    """
    return json.dumps({"key": key, "uploadId": uploadId}).encode("utf-8")


def decodeMarker(body: bytes) -> tuple[str, str]:
    """
    @return: the object key and upload id a marker names.
    @raise ValueError: for a body that is not a marker.
    """
    record = json.loads(body)
    if not isinstance(record, dict) or not all(
        isinstance(record.get(name), str) for name in ("key", "uploadId")
    ):
        raise ValueError("not an upload marker")
    return record["key"], record["uploadId"]


@define(eq=False)
class Lease:
    """
    The marker of one running multipart upload.
    """

    leases: Leases
    key: str
    uploadId: str
    _timer: IDelayedCall | None = field(default=None, init=False)
    _ended: bool = field(default=False, init=False)

    @property
    def markerKey(self) -> str:
        """
        The marker's key.
        """
        return markerKey(self.leases.prefix, self.uploadId)

    def renew(self) -> None:
        """
        Write the marker now, and again every quarter of the orphan age.
        """
        if self._ended:
            return
        self._timer = self.leases.clock.callLater(self.leases.orphanAge / 4, self.renew)
        d = self.leases.store.putObject(
            self.markerKey, encodeMarker(self.key, self.uploadId), None, self.leases.encryption
        )
        d.addErrback(self._failed, "write")

    def end(self, keepMarker: bool = False) -> None:
        """
        The upload completed or was aborted: stop renewing, and delete the
        marker unless C{keepMarker} (when aborting failed, so that a
        sweep tries again).
        """
        if self._ended:
            return
        self._ended = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        if not keepMarker:
            self.leases.store.deleteObject(self.markerKey).addErrback(self._failed, "delete")

    def _failed(self, failure: object, what: str) -> None:
        log.warn(
            "Could not {what} the lease of upload {uploadId} of {key}: {reason}",
            what=what,
            uploadId=self.uploadId,
            key=self.key,
            reason=getattr(getattr(failure, "value", None), "message", None) or failure,
        )


def _encryptionOnly(settings: ObjectSettings | None) -> ObjectSettings | None:
    return None if settings is None else ObjectSettings(None, settings.sse, settings.sseKmsKeyId)


@define(eq=False)
class Leases:
    """
    Makes leases, and sweeps the orphans of crashed servers.

    @ivar store: the bucket.
    @ivar prefix: where markers live.
    @ivar orphanAge: seconds after which an unrenewed marker is an orphan's.
    @ivar clock: the time source.
    @ivar encryption: the server's S3 settings for its markers: their
        encryption only (a bucket policy may require it on every write);
        markers stay in the standard class, untagged.
    """

    store: IObjectStore
    prefix: str
    orphanAge: float
    clock: IReactorTime
    encryption: ObjectSettings | None = field(default=None, converter=_encryptionOnly)
    _sweeps: LoopingCall | None = field(default=None, init=False)

    def track(self, key: str, uploadId: str) -> Lease:
        """
        @return: the started lease of a new multipart upload.
        """
        lease = Lease(self, key, uploadId)
        lease.renew()
        return lease

    def start(self) -> None:
        """
        Sweep now and every half orphan age.
        """
        self._sweeps = LoopingCall(self.sweep)
        self._sweeps.clock = self.clock
        self._sweeps.start(self.orphanAge / 2, now=True).addErrback(
            lambda failure: log.failure("Orphan sweeps stopped", failure)
        )

    def stop(self) -> None:
        """
        Stop sweeping.
        """
        if self._sweeps is not None and self._sweeps.running:
            self._sweeps.stop()

    def sweep(self) -> Deferred[int]:
        """
        Abort every upload whose marker is older than the orphan age.

        @return: a Deferred firing with how many were aborted.
        """
        return Deferred.fromCoroutine(self._sweep())

    async def _sweep(self) -> int:
        aborted = 0
        token = None
        while True:
            try:
                listing = await self.store.listDirectory(self.prefix, PAGE, token)
            except GatewayError as e:
                log.warn("Orphan sweep could not list leases: {reason}", reason=e.message)
                return aborted
            cutoff = self.clock.seconds() - self.orphanAge
            for info in listing.objects:
                if info.mtime < cutoff and await self._abort(info.key, info.etag):
                    aborted += 1
            token = listing.token
            if token is None:
                break
        if aborted:
            log.info("Orphan sweep aborted {count} upload(s)", count=aborted)
        return aborted

    async def _abort(self, marker: str, etag: str) -> bool:
        try:
            key, uploadId = decodeMarker(await self.store.getObject(marker, 0, 4096, etag))
            try:
                await self.store.abortMultipartUpload(key, uploadId)
            except GatewayError as e:
                # Finished or aborted meanwhile: only the marker is left.
                if not isinstance(e, NoSuchFile) and getattr(e, "storeCode", "") != "NoSuchUpload":
                    raise
            await self.store.deleteObject(marker)
        except (GatewayError, ValueError) as e:
            log.warn(
                "Orphan sweep could not clear {marker}: {reason}",
                marker=marker,
                reason=getattr(e, "message", None) or str(e),
            )
            return False
        log.info("Orphan sweep aborted upload {uploadId} of {key}", uploadId=uploadId, key=key)
        return True


class SweepService(Service):
    """
    Sweeps orphans while the server runs.
    """

    def __init__(self, leases: Leases) -> None:
        self.leases = leases

    def startService(self) -> None:
        super().startService()
        self.leases.start()

    def stopService(self) -> None:
        super().stopService()
        self.leases.stop()
