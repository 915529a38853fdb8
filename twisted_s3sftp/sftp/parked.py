"""
Parked uploads: files whose upload was interrupted after S3 stored some of
their parts, kept for the client to continue (L{twisted_s3sftp.store.leases}).

A parked file shows in C{stat}, C{lstat}, C{fstat} and listings with the
bytes stored (whole parts: always less than the file) and the time of its
last part, never a time the client set, so that C{lftp mirror --continue}
takes it for newer than its source and resumes it.  Each session learns its
user's parked files, parked on any server of the bucket, with one listing
of their leases when it first needs them (L{ParkedUploads.load}); uploads
parked on this server are known at once.

An OPEN without C{TRUNC} continues the upload (L{claimParked}); an OPEN
with C{TRUNC}, or a C{remove}, aborts it.  A user keeps at most
C{--resume-max-uploads} parked uploads and C{--resume-max-bytes} parked
bytes, as far as this server knows them: parking one more aborts the
oldest beyond either cap.
"""

from __future__ import annotations

from collections.abc import Iterator

from attrs import define, evolve, field, frozen
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from ..errors import GatewayError, UploadFailed
from ..ops.audit import audit
from ..store.interfaces import IObjectStore, StoredPart
from ..store.leases import Busy, Lease, Leases
from ..store.resume import PARKED, LeaseRecord
from .attributes import fileAttributes

log = Logger()


@frozen
class ParkedFile:
    """
    One parked upload, as a lease tells it.

    @ivar record: the lease's record.
    @ivar etag: the lease's ETag, which a claim must match.
    @ivar written: when the lease was last written (seconds since the
        epoch, by the store's clock).
    """

    record: LeaseRecord
    etag: str
    written: float

    @property
    def key(self) -> str:
        """
        The object key the upload will create.
        """
        return self.record.key

    @property
    def owner(self) -> str:
        """
        The user it belongs to.
        """
        return self.record.user

    def attributes(self) -> dict[str, int]:
        """
        @return: what C{stat} shows: the bytes stored, and the time of the
            last part stored.
        """
        return fileAttributes(self.record.stored, int(self.record.changed))


@frozen
class ResumeCaps:
    """
    How much one user may leave parked.

    @ivar uploads: the most parked uploads.
    @ivar bytes: the most bytes in parked uploads.
    """

    uploads: int = 100
    bytes: int = 1024**4


@define(eq=False)
class ParkedUploads:
    """
    The parked uploads this server knows of, by key.

    @ivar leases: the server's leases, or L{None} when nothing is resumed.
    @ivar caps: the per-user caps.
    """

    leases: Leases | None = None
    caps: ResumeCaps = ResumeCaps()
    _byKey: dict[str, ParkedFile] = field(factory=dict, init=False)

    @property
    def enabled(self) -> bool:
        """
        Whether interrupted uploads are kept to be resumed.
        """
        return self.leases is not None and bool(self.leases.resumeTtl)

    def get(self, user: str, key: str) -> ParkedFile | None:
        """
        @return: C{user}'s parked upload to C{key}, or L{None}.
        """
        found = self._byKey.get(key)
        return found if found is not None and found.owner == user else None

    def under(self, user: str, prefix: str) -> Iterator[ParkedFile]:
        """
        @return: C{user}'s parked uploads to keys directly under C{prefix}.
        """
        for key, found in list(self._byKey.items()):
            if found.owner == user and key.startswith(prefix) and "/" not in key[len(prefix) :]:
                yield found

    def forget(self, found: ParkedFile) -> None:
        """
        Stop listing C{found} (claimed or discarded).
        """
        current = self._byKey.get(found.key)
        if current is not None and current.record.uploadId == found.record.uploadId:
            del self._byKey[found.key]

    async def idle(self, found: ParkedFile) -> ParkedFile | None:
        """
        @return: C{found} as its lease is now, if nobody runs its upload
            (it is parked, or its server stopped rewriting its lease);
            L{None} if someone does, or it is gone.
        """
        assert self.leases is not None
        if found.record.state == PARKED:
            return found
        current = await self.leases.current(found.record)
        if current is None:
            self.forget(found)
            return None
        info, record = current
        if record.state != PARKED and not self.leases.stale(info.mtime):
            return None
        return ParkedFile(record, info.etag, info.mtime)

    async def load(self, user: str) -> None:
        """
        Learn C{user}'s parked uploads from their leases (one listing, and
        one read per lease), replacing what was known of them.
        """
        if not self.enabled:
            return
        assert self.leases is not None
        try:
            leases = await self.leases.userLeases(user)
        except GatewayError as e:
            log.warn(
                "Could not list the parked uploads of {user}: {reason}", user=user, reason=e.message
            )
            return
        for key, found in list(self._byKey.items()):
            if found.owner == user:
                del self._byKey[key]
        for info, record in leases:
            current = self._byKey.get(record.key)
            if current is None or current.written < info.mtime:
                self._byKey[record.key] = ParkedFile(record, info.etag, info.mtime)

    def park(self, record: LeaseRecord, etag: str, now: float) -> None:
        """
        An upload of this server was parked: list it, and abort the owner's
        oldest beyond the caps.
        """
        found = ParkedFile(record, etag, now)
        previous = self._byKey.get(found.key)
        self._byKey[found.key] = found
        if (
            previous is not None
            and previous.record.uploadId != record.uploadId
            and previous.record.state == PARKED
        ):
            self._discardLater(previous, "a newer upload of the file was parked")
        mine = sorted(
            # Only parked uploads count: one running elsewhere is not touched.
            (
                f
                for f in self._byKey.values()
                if f.owner == record.user and f.record.state == PARKED
            ),
            key=lambda f: f.record.changed,
        )
        total = sum(f.record.stored for f in mine)
        while mine and (len(mine) > self.caps.uploads or total > self.caps.bytes):
            oldest = mine.pop(0)
            total -= oldest.record.stored
            self._discardLater(oldest, "the user's cap on parked uploads was reached")

    def _discardLater(self, found: ParkedFile, reason: str) -> None:
        self.forget(found)
        d = self.discard(found, reason)
        d.addErrback(
            lambda failure: log.warn(
                "Could not abort the parked upload of {key}: {reason}",
                key=found.key,
                reason=getattr(failure.value, "message", None) or failure.value,
            )
        )

    def discard(self, found: ParkedFile, reason: str) -> Deferred[bool]:
        """
        Abort a parked upload and delete its lease.

        @return: a Deferred firing with whether it was aborted (not if it
            was claimed meanwhile).
        """
        return Deferred.fromCoroutine(self._discard(found, reason))

    async def _discard(self, found: ParkedFile, reason: str) -> bool:
        assert self.leases is not None
        self.forget(found)
        aborted = await self.leases.discard(found.record, found.etag)
        if aborted:
            audit(
                "upload",
                warn=True,
                outcome="aborted",
                user=found.owner,
                path=found.record.path,
                key=found.key,
                bytes=found.record.stored,
                reason=reason,
            )
        return aborted


async def claimParked(
    parked: ParkedUploads, found: ParkedFile, store: IObjectStore, owner: str
) -> tuple[Lease, tuple[StoredPart, ...]]:
    """
    Take a parked upload over for this session: claim its lease (one
    session, on any server, wins), and check what S3 holds against it.

    @return: the claimed lease, whose record keeps only the checkpoints the
        stored parts bear out, and those parts.
    @raise Busy: if another session runs it or claimed it first.
    @raise UploadFailed: if S3 no longer has the upload, or holds none of
        the parts the lease counts on (then it is aborted).
    """
    leases = parked.leases
    assert leases is not None
    idle = await parked.idle(found)
    if idle is None:
        raise Busy()
    record = idle.record
    try:
        lease = await leases.claim(record, idle.etag, owner)
    except Busy:
        # Learn what the lease says now, for the client's next try.
        await parked.load(record.user)
        raise
    parked.forget(found)
    try:
        listed = await store.listParts(record.key, record.uploadId)
    except GatewayError as e:
        if getattr(e, "storeCode", "") == "NoSuchUpload":
            lease.end()
            raise UploadFailed(
                "the interrupted upload of this file has expired; upload it again"
            ) from None
        # Leave it parked, as it was, for a later try.
        again = await lease.park(list(record.checkpoints))
        if again is not None and lease.etag is not None:
            parked.park(again, lease.etag, leases.clock.seconds())
        raise
    schedule = record.schedule
    byNumber = {part.number: part for part in listed}
    contiguous = 0
    while (
        contiguous + 1 in byNumber
        and byNumber[contiguous + 1].size == schedule.sizeOf(contiguous + 1)
        and _sameChecksum(byNumber[contiguous + 1].checksum, record.checksum(contiguous + 1))
    ):
        contiguous += 1
    checkpoints = [c for c in record.checkpoints if c.parts <= contiguous]
    if not checkpoints:
        await leases.discard(record, lease.etag)
        raise UploadFailed(
            "the stored parts of the interrupted upload of this file are not "
            "what it needs; upload it again"
        )
    lease.record = evolve(lease.record, checkpoints=checkpoints)
    # The store's checksum where it reports one, else the lease's.
    parts = tuple(
        evolve(byNumber[n], checksum=byNumber[n].checksum or record.checksum(n))
        for n in range(1, checkpoints[-1].parts + 1)
    )
    return lease, parts


def _sameChecksum(listed: str | None, recorded: str | None) -> bool:
    """
    @return: whether a part the store lists is the one the lease recorded,
        as far as their checksums tell (a part stored again since, by a
        server that parked before it landed, is not).
    """
    return listed is None or recorded is None or listed == recorded
