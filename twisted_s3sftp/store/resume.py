"""
What a lease records about its multipart upload, so that another
connection, or another server, can continue it: a L{LeaseRecord}, and its
JSON body.

A lease (L{twisted_s3sftp.store.leases}) is rewritten as the upload's parts
are stored (a checkpoint), and when the upload is I{parked}: its client's
connection was lost, or the server shut down, after some parts were
stored.  The record holds no part list (the store's C{ListParts} gives the
ETags and checksums when the upload completes), only what the store
cannot: the part schedule, the whole file's SHA-256 state at the last
part boundaries S3 confirmed, and the client's modification time.

Bodies written before records existed (C{{"key", "uploadId"}}) decode as
an upload that cannot be resumed.

Pure core: no Twisted, no boto3.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from attrs import evolve, field, frozen

from .hashes import SET_VERSION, splitState
from .parts import Checkpoint, PartLimits, PartSchedule

#: The upload runs (or ran, on a server that died).
ACTIVE = "active"

#: Nobody runs the upload; a client may continue it.
PARKED = "parked"

#: The most bytes of a lease body read back (10,000 parts' checksums
#: take 53 KiB).
MAX_BODY = 256 * 1024


def _checkpoints(value: Any) -> tuple[Checkpoint, ...]:
    return tuple(value)


@frozen
class LeaseRecord:
    """
    One multipart upload, as its lease tells it.

    @ivar key: the object key the upload will create.
    @ivar uploadId: the store's id of the upload.
    @ivar user: the login name it belongs to (only they may continue it).
    @ivar path: the path the client opened, for the log and audit trail.
    @ivar state: L{ACTIVE} or L{PARKED}.
    @ivar partSize: the schedule's first part size.
    @ivar limits: the store's limits the schedule was cut for.
    @ivar checkpoints: the SHA-256 state at the last part boundaries up to
        which every part is stored, oldest first; none for an upload that
        cannot be continued.
    @ivar checksums: the CRC32 of each part stored, 4 bytes big-endian
        per part from part 1, up to the last checkpoint at least: S3 wants
        every part's checksum to complete an upload created with them, and
        not every store's C{ListParts} reports them (SeaweedFS does not).
    @ivar mtime: the modification time the client set, if any.
    @ivar changed: when the upload last stored a part or was parked
        (seconds since the epoch): what a listing shows as its time.
    @ivar owner: the server (and session) running it, for the log.
    @ivar written: when the lease was written (each write changes it, so
        that each write changes the lease's ETag, which claims compare).
    """

    key: str
    uploadId: str
    user: str = ""
    path: str = ""
    state: str = ACTIVE
    partSize: int = 0
    limits: PartLimits = PartLimits()
    checkpoints: tuple[Checkpoint, ...] = field(default=(), converter=_checkpoints)
    checksums: bytes = b""
    mtime: int | None = None
    changed: float = 0.0
    owner: str = ""
    written: float = 0.0

    @property
    def resumable(self) -> bool:
        """
        Whether a client may continue the upload: some part is stored, and
        the hash state at its end is known.
        """
        return bool(self.checkpoints) and self.partSize > 0

    @property
    def stored(self) -> int:
        """
        The bytes stored, whole parts up to the last checkpoint: the size
        a parked file shows, and where a resume continues.
        """
        return self.checkpoints[-1].offset if self.checkpoints else 0

    @property
    def schedule(self) -> PartSchedule:
        """
        The part schedule the upload was cut with (whatever the part size
        of the server continuing it).
        """
        return PartSchedule(self.partSize, self.limits)

    def checksum(self, number: int) -> str | None:
        """
        @return: part C{number}'s CRC32, base64 as S3 writes it, or L{None}
            if the record does not have it (four zero bytes stand for a
            part stored without one).
        """
        raw = self.checksums[4 * (number - 1) : 4 * number]
        if len(raw) != 4 or raw == bytes(4):
            return None
        return base64.b64encode(raw).decode("ascii")

    def boundary(self, offset: int) -> Checkpoint | None:
        """
        @return: the checkpoint at C{offset}, or L{None} if none is kept.
        """
        for checkpoint in self.checkpoints:
            if checkpoint.offset == offset:
                return checkpoint
        return None

    def parked(self, now: float) -> LeaseRecord:
        """
        @return: this record, parked at C{now}.
        """
        return evolve(self, state=PARKED, changed=now, owner="")

    def encode(self) -> bytes:
        """
        @return: the lease's body.
        """
        record: dict[str, Any] = {
            # Version 3: a checkpoint may hold the states of several hashes
            # (which a server of version 2 could not restore); version 2
            # when they hold SHA-256's alone, for servers before MD5 was kept.
            "v": 3 if any(c.state[:1] == bytes([SET_VERSION]) for c in self.checkpoints) else 2,
            "key": self.key,
            "uploadId": self.uploadId,
            "user": self.user,
            "path": self.path,
            "state": self.state,
            "partSize": self.partSize,
            "limits": [self.limits.minPartSize, self.limits.maxPartSize, self.limits.maxParts],
            "checkpoints": [
                [c.parts, c.offset, base64.b64encode(c.state).decode("ascii")]
                for c in self.checkpoints
            ],
            "checksums": base64.b64encode(self.checksums).decode("ascii"),
            "mtime": self.mtime,
            "changed": self.changed,
            "owner": self.owner,
            "written": self.written,
        }
        return json.dumps(record, separators=(",", ":")).encode("utf-8")


def decodeRecord(body: bytes) -> LeaseRecord:
    """
    @return: the record a lease's body holds.
    @raise ValueError: for a body that is not a lease's.
    """
    try:
        record = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"not an upload lease: {e}") from None
    if not isinstance(record, dict) or not all(
        isinstance(record.get(name), str) for name in ("key", "uploadId")
    ):
        raise ValueError("not an upload lease")
    if record.get("v") not in (2, 3):
        return LeaseRecord(record["key"], record["uploadId"])
    try:
        minPart, maxPart, maxParts = record["limits"]
        checkpoints = tuple(
            Checkpoint(int(parts), int(offset), base64.b64decode(state, validate=True))
            for parts, offset, state in record["checkpoints"]
        )
        for checkpoint in checkpoints:
            splitState(checkpoint.state)
        mtime = record["mtime"]
        checksums = base64.b64decode(record["checksums"], validate=True)
        if len(checksums) % 4:
            raise ValueError("checksums are not 4 bytes each")
        result = LeaseRecord(
            key=record["key"],
            uploadId=record["uploadId"],
            user=str(record["user"]),
            path=str(record["path"]),
            state=record["state"] if record["state"] in (ACTIVE, PARKED) else ACTIVE,
            partSize=int(record["partSize"]),
            limits=PartLimits(int(minPart), int(maxPart), int(maxParts)),
            checkpoints=checkpoints,
            checksums=checksums,
            mtime=None if mtime is None else int(mtime),
            changed=float(record["changed"]),
            owner=str(record["owner"]),
            written=float(record.get("written", 0.0)),
        )
        if result.partSize:
            result.schedule  # noqa: B018 (validates the schedule)
    except (KeyError, TypeError, ValueError, binascii.Error) as e:
        raise ValueError(f"not an upload lease: {e}") from None
    return result
