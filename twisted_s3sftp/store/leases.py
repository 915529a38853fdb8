"""
Leases: what marks a multipart upload as this server's, keeps what a
resume needs, and lets the sweep abort the uploads nobody will finish.

S3 lists unfinished multipart uploads but not their metadata, so an upload
is recognised as a server's own by a I{lease}: a small object under the
state prefix (C{--state-prefix}, default C{.s3sftp/uploads/}, outside every
home), at C{<prefix><user>/<upload>} (both base64url), so that one listing
finds a user's uploads.  Its body is a
L{twisted_s3sftp.store.resume.LeaseRecord}.

  - A multipart upload writes its lease when it is created, and rewrites it
    every L{Leases.interval} seconds while it runs (C{--lease-interval}, 15 s
    by default, at most a quarter of C{--orphan-age}), with the SHA-256
    state at the last part boundaries S3 confirmed: one small PUT per
    interval per upload, whatever its speed.  A server killed with
    C{SIGKILL} thus leaves an upload resumable from at most one interval
    before it died.  Every rewrite is conditional on the ETag of the last
    (C{If-Match}), so that a server that lost its upload to another (which
    took it for dead) stops, rather than overwrite the other's lease.
  - A lease not rewritten for three intervals is I{stale}: its server is
    gone, and a client of the same user may take the upload over.
  - A parked upload (L{Lease.park}) is one nobody runs: its lease says so,
    and is no longer rewritten.  A client continues it by I{claiming} the
    lease (L{Leases.claim}): a compare-and-swap write, so that only one
    session, on any server, wins.
  - The sweep, run at start-up and then every half of the shorter of
    C{--orphan-age} and C{--resume-ttl} by every server on the bucket,
    aborts the upload of a lease older than C{--resume-ttl} if it can be
    resumed, or than C{--orphan-age} if not, and deletes the lease; it
    first rewrites the lease as not resumable, conditionally, so that an
    upload claimed meanwhile is left alone.
  - Multipart uploads without a lease (other tools', or one whose lease
    could not be written) are never touched; the bucket's
    C{AbortIncompleteMultipartUpload} lifecycle rule is the backstop for
    those, and must allow for the longest upload plus C{--resume-ttl}.
  - Leases written before leases had records (flat, C{<prefix><upload>},
    C{{"key", "uploadId"}}) are still swept.
"""

from __future__ import annotations

import base64
from collections.abc import Callable

from attrs import define, evolve, field
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from ..errors import Changed, GatewayError, NoSuchFile, UploadFailed
from .interfaces import IObjectStore, ObjectInfo, ObjectSettings
from .parts import Checkpoint
from .resume import MAX_BODY, PARKED, LeaseRecord, decodeRecord

log = Logger()

#: Leases read per listing page.
PAGE = 1000

#: The default seconds between the rewrites of a running upload's lease.
DEFAULT_INTERVAL = 15.0

#: A lease not rewritten for this many intervals is its dead server's.
STALE_INTERVALS = 3

#: The most of one user's leases read at login.
MAX_USER_LEASES = 1000


def _token(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode("utf-8")).decode("ascii")


def userPrefix(prefix: str, user: str) -> str:
    """
    @return: the prefix under which C{user}'s leases live.
    """
    return f"{prefix}{_token(user)}/"


def markerKey(prefix: str, uploadId: str, user: str = "") -> str:
    """
    @return: the key of the lease of multipart upload C{uploadId} of
        C{user} (flat under C{prefix} without a user, as leases were
        before they had records).
    """
    return (userPrefix(prefix, user) if user else prefix) + _token(uploadId)


class Busy(UploadFailed):
    """
    Another session, on this server or another, runs the upload.
    """

    def __init__(self) -> None:
        super().__init__("the file is being uploaded by another session; try again shortly")


@define(eq=False)
class Lease:
    """
    The lease of one multipart upload this server runs.

    @ivar leases: the server's leases.
    @ivar record: what it says now.
    @ivar etag: the ETag of its last write, which the next must match;
        L{None} before the first.
    @ivar onLost: called with a reason if another session took the upload
        over (a rewrite found the lease changed).
    @ivar checksums: the CRC32 (base64) of the parts stored, from part 1
        without a gap, which the upload appends to; each write records
        those up to the last checkpoint (L{LeaseRecord.checksums}).
    """

    leases: Leases
    record: LeaseRecord
    etag: str | None = None
    onLost: Callable[[str], None] | None = None
    checksums: list[str] = field(factory=list)
    _timer: IDelayedCall | None = field(default=None, init=False)
    _stopped: bool = field(default=False, init=False)
    _ended: bool = field(default=False, init=False)
    _writing: Deferred[None] | None = field(default=None, init=False)
    _again: bool = field(default=False, init=False)

    @property
    def markerKey(self) -> str:
        """
        The lease's key.
        """
        return markerKey(self.leases.prefix, self.record.uploadId, self.record.user)

    def renew(self, now: bool = True) -> None:
        """
        Write the lease every interval, starting now unless C{now} is false
        (a lease just written by its claim).
        """
        if self._stopped:
            return
        self._timer = self.leases.clock.callLater(self.leases.interval, self.renew)
        if now and self._writing is None:
            writing = Deferred.fromCoroutine(self._write())
            if not writing.called:
                self._writing = writing

    def flush(self) -> None:
        """
        Write the lease now (after a change a resume must not miss), or
        again as soon as the write under way ends.
        """
        if self._stopped:
            return
        if self._writing is not None:
            self._again = True
            return
        writing = Deferred.fromCoroutine(self._write())
        if not writing.called:
            self._writing = writing

    def checkpoint(self, checkpoints: list[Checkpoint]) -> None:
        """
        Parts were stored: the lease's next write records the hash state at
        C{checkpoints}, the boundaries up to which every part is stored.
        """
        if checkpoints and checkpoints != list(self.record.checkpoints):
            self.record = evolve(
                self.record, checkpoints=checkpoints, changed=self.leases.clock.seconds()
            )

    def _current(self) -> LeaseRecord:
        """
        @return: the record, with the checksums of the parts up to its last
            checkpoint.
        """
        if not self.record.checkpoints:
            return self.record
        parts = self.record.checkpoints[-1].parts
        if len(self.record.checksums) >= 4 * parts or len(self.checksums) < parts:
            return self.record
        raw = b"".join(
            base64.b64decode(checksum) if checksum else bytes(4)
            for checksum in self.checksums[:parts]
        )
        self.record = evolve(self.record, checksums=raw)
        return self.record

    async def _write(self) -> None:
        try:
            self.record = evolve(self._current(), written=self.leases.clock.seconds())
            stored = await self.leases.store.putObject(
                self.markerKey,
                self.record.encode(),
                None,
                self.leases.encryption,
                ifMatch=self.etag,
            )
            self.etag = stored.etag
        except Changed:
            self._lost()
        except GatewayError as e:
            self._failed(e, "write")
        finally:
            self._writing = None
        if self._again:
            self._again = False
            self.flush()

    def _lost(self) -> None:
        self._stop()
        log.warn(
            "Upload {uploadId} of {key} was taken over by another session",
            uploadId=self.record.uploadId,
            key=self.record.key,
        )
        if self.onLost is not None:
            self.onLost("the upload was taken over by another session")

    async def park(self, checkpoints: list[Checkpoint]) -> LeaseRecord | None:
        """
        Nobody runs the upload any more: stop rewriting the lease, and
        write it as parked with the hash state at C{checkpoints}.

        @return: the parked record (its L{etag} set), or L{None} if it
            could not be written.
        @raise Changed: if another session took the upload over: it is
            theirs now.
        """
        self._stop()
        if self._writing is not None:
            await self._writing
        self.checkpoint(checkpoints)
        now = self.leases.clock.seconds()
        parked = evolve(self._current().parked(now), written=now)
        try:
            stored = await self.leases.store.putObject(
                self.markerKey, parked.encode(), None, self.leases.encryption, ifMatch=self.etag
            )
        except Changed:
            raise
        except GatewayError as e:
            self._failed(e, "park")
            return None
        self.etag, self.record = stored.etag, parked
        return parked

    def end(self, keepMarker: bool = False) -> None:
        """
        The upload completed or was aborted: stop rewriting, and delete the
        lease unless C{keepMarker} (when aborting failed, so that a sweep
        tries again).
        """
        if self._ended:
            return
        self._ended = True
        self._stop()
        if not keepMarker:
            self.leases.store.deleteObject(self.markerKey).addErrback(self._failed, "delete")

    def _stop(self) -> None:
        self._stopped = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()

    def _failed(self, failure: object, what: str) -> None:
        log.warn(
            "Could not {what} the lease of upload {uploadId} of {key}: {reason}",
            what=what,
            uploadId=self.record.uploadId,
            key=self.record.key,
            reason=getattr(getattr(failure, "value", failure), "message", None) or failure,
        )


def _encryptionOnly(settings: ObjectSettings | None) -> ObjectSettings | None:
    return None if settings is None else ObjectSettings(None, settings.sse, settings.sseKmsKeyId)


@define(eq=False)
class Leases:
    """
    Makes, claims and sweeps leases.

    @ivar store: the bucket.
    @ivar prefix: where leases live.
    @ivar orphanAge: seconds after which a lease not rewritten is an
        orphan's, unless its upload can be resumed.
    @ivar clock: the time source.
    @ivar encryption: the server's S3 settings for its leases: their
        encryption only (a bucket policy may require it on every write);
        leases stay in the standard class, untagged.
    @ivar resumeTtl: seconds a resumable upload is kept after its lease was
        last written; 0 when uploads are never resumed.
    @ivar interval: seconds between the rewrites of a running upload's
        lease (at most a quarter of L{orphanAge}).
    """

    store: IObjectStore
    prefix: str
    orphanAge: float
    clock: IReactorTime
    encryption: ObjectSettings | None = field(default=None, converter=_encryptionOnly)
    resumeTtl: float = 0.0
    interval: float = field(default=DEFAULT_INTERVAL)
    _sweeps: LoopingCall | None = field(default=None, init=False)

    def __attrs_post_init__(self) -> None:
        self.interval = min(self.interval, self.orphanAge / 4)

    def track(self, record: LeaseRecord) -> Lease:
        """
        @return: the started lease of a new multipart upload.
        """
        lease = Lease(self, record)
        lease.renew()
        return lease

    def stale(self, written: float) -> bool:
        """
        @param written: when a running upload's lease was last written.
        @return: whether that is long enough ago that its server is gone.
        """
        return self.clock.seconds() - written > STALE_INTERVALS * self.interval

    async def userLeases(self, user: str) -> list[tuple[ObjectInfo, LeaseRecord]]:
        """
        @return: C{user}'s leases that can be resumed, with their listing
            entries (ETag and time of their last write).
        """
        found: list[tuple[ObjectInfo, LeaseRecord]] = []
        token = None
        prefix = userPrefix(self.prefix, user)
        while len(found) < MAX_USER_LEASES:
            listing = await self.store.listDirectory(prefix, PAGE, token)
            for info in listing.objects:
                if info.key.endswith("/"):
                    # A store's own marker of the directory (SeaweedFS).
                    continue
                try:
                    body = await self.store.getObject(info.key, 0, MAX_BODY, info.etag)
                    record = decodeRecord(body)
                except Changed:
                    continue
                except ValueError as e:
                    log.warn("Unusable lease {key}: {reason}", key=info.key, reason=str(e))
                    continue
                if record.resumable and record.user == user:
                    found.append((info, record))
            token = listing.token
            if token is None:
                break
        return found

    async def current(self, record: LeaseRecord) -> tuple[ObjectInfo, LeaseRecord] | None:
        """
        @return: the lease of C{record}'s upload as it is now (its listing
            entry, whose time is its last write, and its record), or
            L{None} if it is gone.
        """
        key = markerKey(self.prefix, record.uploadId, record.user)
        info = await self.store.headObject(key)
        if info is None:
            return None
        try:
            return info, decodeRecord(await self.store.getObject(key, 0, MAX_BODY, info.etag))
        except (Changed, ValueError):
            return None

    async def claim(self, record: LeaseRecord, etag: str, owner: str) -> Lease:
        """
        Take a parked (or stale) upload over: rewrite its lease as running,
        provided it still has ETag C{etag}.

        @param owner: who runs it now, for the log.
        @return: its running lease.
        @raise Busy: if the lease changed meanwhile (another session claimed
            it, or its server still runs it).
        """
        running = evolve(record, state="active", owner=owner, written=self.clock.seconds())
        lease = Lease(self, running)
        try:
            stored = await self.store.putObject(
                lease.markerKey, running.encode(), None, self.encryption, ifMatch=etag
            )
        except (Changed, NoSuchFile):
            raise Busy() from None
        lease.etag = stored.etag
        return lease

    async def discard(self, record: LeaseRecord, etag: str | None) -> bool:
        """
        Abort an upload nobody runs, and delete its lease; nothing is done
        if the lease no longer has ETag C{etag} (someone claimed it).

        @return: whether the upload was aborted.
        """
        key = markerKey(self.prefix, record.uploadId, record.user)
        if etag is not None:
            # First make it unclaimable, so that no client continues an
            # upload about to be aborted.
            closed = LeaseRecord(record.key, record.uploadId, record.user, record.path)
            try:
                await self.store.putObject(
                    key, closed.encode(), None, self.encryption, ifMatch=etag
                )
            except (Changed, NoSuchFile):
                return False
        try:
            await self.store.abortMultipartUpload(record.key, record.uploadId)
        except GatewayError as e:
            # Finished or aborted meanwhile: only the lease is left.
            if not isinstance(e, NoSuchFile) and getattr(e, "storeCode", "") != "NoSuchUpload":
                raise
        await self.store.deleteObject(key)
        return True

    def start(self) -> None:
        """
        Sweep now and every half of the shorter age.
        """
        self._sweeps = LoopingCall(self.sweep)
        self._sweeps.clock = self.clock
        self._sweeps.start(self._shortestAge / 2, now=True).addErrback(
            lambda failure: log.failure("Orphan sweeps stopped", failure)
        )

    @property
    def _shortestAge(self) -> float:
        return min(self.orphanAge, self.resumeTtl) if self.resumeTtl else self.orphanAge

    def stop(self) -> None:
        """
        Stop sweeping.
        """
        if self._sweeps is not None and self._sweeps.running:
            self._sweeps.stop()

    def sweep(self) -> Deferred[int]:
        """
        Abort every upload whose lease is older than its age.

        @return: a Deferred firing with how many were aborted.
        """
        return Deferred.fromCoroutine(self._sweep())

    async def _sweep(self) -> int:
        aborted = 0
        prefixes = [self.prefix]
        while prefixes:
            prefix = prefixes.pop()
            token = None
            while True:
                try:
                    listing = await self.store.listDirectory(prefix, PAGE, token)
                except GatewayError as e:
                    log.warn("Orphan sweep could not list leases: {reason}", reason=e.message)
                    return aborted
                if prefix == self.prefix:
                    prefixes.extend(listing.prefixes)
                cutoff = self.clock.seconds() - self._shortestAge
                for info in listing.objects:
                    if info.key.endswith("/"):
                        continue
                    if info.mtime < cutoff and await self._expire(info):
                        aborted += 1
                token = listing.token
                if token is None:
                    break
        if aborted:
            log.info("Orphan sweep aborted {count} upload(s)", count=aborted)
        return aborted

    async def _expire(self, info: ObjectInfo) -> bool:
        try:
            record = decodeRecord(await self.store.getObject(info.key, 0, MAX_BODY, info.etag))
            resumable = record.resumable and self.resumeTtl
            age = self.resumeTtl if resumable else self.orphanAge
            if info.mtime >= self.clock.seconds() - age:
                return False
            if not await self._discardListed(info, record):
                return False
        except (GatewayError, ValueError) as e:
            log.warn(
                "Orphan sweep could not clear {marker}: {reason}",
                marker=info.key,
                reason=getattr(e, "message", None) or str(e),
            )
            return False
        log.info(
            "Orphan sweep aborted {what} upload {uploadId} of {key}",
            what="parked" if record.state == PARKED else "orphaned",
            uploadId=record.uploadId,
            key=record.key,
        )
        return True

    async def _discardListed(self, info: ObjectInfo, record: LeaseRecord) -> bool:
        """
        Discard the upload of the lease at C{info} (whose key may be in
        the old, flat layout).
        """
        if info.key == markerKey(self.prefix, record.uploadId, record.user):
            return await self.discard(record, info.etag)
        # A flat lease: never claimable, so aborted at once.
        await self.discard(evolve(record, user=""), None)
        if info.key != markerKey(self.prefix, record.uploadId):
            await self.store.deleteObject(info.key)
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
