"""
The server's configuration: one immutable value, validated once.

L{ServerConfig} is built from the command line by L{twisted_s3sftp.tap};
each validator here raises C{ValueError} with a short reason so that a bad
option fails before the reactor starts, with one line saying what is wrong.

Pure core: no Twisted, no boto3.
"""

from __future__ import annotations

import math
import re
from urllib.parse import urlsplit

from attrs import field, frozen, validators

from .sftp.flow import SLACK
from .sftp.paths import isValidUsername, validateHomeTemplate
from .ssh.admission import Limits
from .ssh.policy import MODERN, CryptoPolicy
from .ssh.userpolicy import UserPolicy
from .store.interfaces import ObjectSettings
from .store.parts import DEFAULT_HASHES, MAX_PART_SIZE, MIN_PART_SIZE, MiB, UploadPolicy

_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")

#: The default part size: 8 MiB, as boto3 and rclone use.
DEFAULT_PART_SIZE = 8 * MiB

#: The default memory one upload may hold: room for 4 parts of 8 MiB in
#: flight while the next one fills, with margin.
DEFAULT_BUFFER_LIMIT = 64 * MiB

#: The default memory all uploads together may hold.
DEFAULT_MEMORY_LIMIT = 1024 * MiB

#: The default number of parts of one upload in flight to S3 at once.
DEFAULT_UPLOAD_CONCURRENCY = 4

#: The default seconds running uploads get to finish at shutdown.
DEFAULT_DRAIN_TIMEOUT = 30.0

#: The default age past which an unrenewed upload is an orphan: a day.
DEFAULT_ORPHAN_AGE = 24 * 3600.0

#: Seconds an interrupted upload is kept for a resume, by default.
DEFAULT_RESUME_TTL = 24 * 3600.0

#: Seconds between the rewrites of a running upload's lease, by default.
DEFAULT_LEASE_INTERVAL = 15.0

#: Seconds a directory listing answers lookups, by default
#: (L{twisted_s3sftp.store.dircache}): long enough for a batch of uploads
#: into one directory to need one listing every few seconds, short enough
#: that what another server on the bucket changed is seen soon.
DEFAULT_DIR_CACHE_TTL = 5.0

#: Where upload leases live by default (L{twisted_s3sftp.store.leases}).
DEFAULT_STATE_PREFIX = ".s3sftp/uploads/"

#: The most parts of one upload that may be in flight at once.
MAX_UPLOAD_CONCURRENCY = 32

#: Bounds on the threads (and HTTP connections) boto3 runs on.
MIN_S3_THREADS, MAX_S3_THREADS = 10, 64


def checkBucketName(name: str) -> str:
    """
    @param name: a bucket name.
    @return: C{name}, if it follows S3's naming rules.
    @raise ValueError: if it does not.
    """
    if not _BUCKET.fullmatch(name) or ".." in name:
        raise ValueError(
            f"{name!r} is not a valid bucket name (3-63 characters: "
            "lowercase letters, digits, '.' and '-')"
        )
    return name


def checkEndpointURL(url: str) -> str:
    """
    @param url: an S3 endpoint such as C{http://127.0.0.1:8333}.
    @return: C{url}, if it is an absolute http or https URL.
    @raise ValueError: if it is not.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not an http:// or https:// URL")
    try:
        parts.port  # noqa: B018 (reading the port is what validates it)
    except ValueError:
        raise ValueError(f"{url!r} has an invalid port") from None
    return url


def checkStatePrefix(prefix: str, homeTemplate: str) -> str:
    """
    @param prefix: where upload leases live.
    @param homeTemplate: the homes' template.
    @return: C{prefix}, if it ends with C{/} and no user's home can hold
        it (no valid username fits where the template puts one).
    @raise ValueError: otherwise.
    """
    if not prefix.endswith("/") or prefix.startswith("/"):
        raise ValueError(f"state prefix {prefix!r} must end with '/' and not start with it")
    before = homeTemplate.split("{username}")[0]
    if prefix.startswith(before):
        rest = prefix[len(before) :].split("/")[0]
        if isValidUsername(rest):
            raise ValueError(f"state prefix {prefix!r} would be inside the home of user {rest!r}")
    return prefix


def _call(check):  # type: ignore[no-untyped-def]
    def validator(instance: object, attribute: object, value: object) -> None:
        check(value)

    return validator


def _checkPartSize(instance: object, attribute: object, value: int) -> None:
    if not MIN_PART_SIZE <= value <= MAX_PART_SIZE:
        raise ValueError(
            f"part size {value} is outside S3's limits "
            f"({MIN_PART_SIZE // MiB} MiB to {MAX_PART_SIZE // MiB} MiB)"
        )


def _nonEmpty(instance: object, attribute: object, value: tuple[str, ...]) -> None:
    if not value:
        raise ValueError("at least one --listen endpoint is needed")


#: The most worker processes C{--workers} runs.
MAX_WORKERS = 256


def parseWorkers(text: str, cpus: int) -> int:
    """
    @param text: C{--workers}: a number, or C{auto}.
    @param cpus: the CPUs this process may run on.
    @return: how many workers to run (C{auto}: one per CPU).
    @raise ValueError: if C{text} is neither.
    """
    if text.strip().lower() == "auto":
        return max(1, cpus)
    try:
        return int(text)
    except ValueError:
        raise ValueError("not a number or auto") from None


@frozen
class ServerConfig:
    """
    Everything the service needs to start.

    @ivar bucket: the S3 bucket every user's home lives in.
    @ivar endpointURL: an S3-compatible endpoint, or L{None} for AWS.
    @ivar region: the S3 region, or L{None} for boto3's own choice.
    @ivar listen: Twisted server endpoint descriptions to listen on.
    @ivar keysDir: the directory of C{<username>.pub} files.
    @ivar hostKeys: paths of SSH host private keys.
    @ivar homeTemplate: the per-user key prefix, e.g. C{"{username}/"}.
    @ivar partSize: the first parts' size in bytes (parts grow from it).
    @ivar bufferLimit: the memory one upload may hold.
    @ivar memoryLimit: the memory all uploads together may hold.
    @ivar uploadConcurrency: parts of one upload in flight at once.
    @ivar limits: the limits before and after login.
    @ivar drainTimeout: seconds running uploads get to finish at shutdown.
    @ivar metrics: the endpoint for C{/metrics} and C{/healthz}, or L{None}.
    @ivar orphanAge: seconds after which a multipart upload nobody renews
        is aborted by the orphan sweep; 0 for no sweep.
    @ivar cryptoPolicy: the SSH algorithms offered and the keys accepted.
    @ivar statePrefix: where the server keeps its upload leases, outside
        every home.
    @ivar objectSettings: the S3 settings of every object the server
        creates (C{--storage-class}, C{--sse}, C{--sse-kms-key-id},
        C{--object-tag}), which a user's policy may override.
    @ivar defaultPolicy: the server's C{--default-policy}, the widest any
        user gets.
    @ivar resumeTtl: seconds an interrupted upload is kept for its client
        to resume; 0 to abort interrupted uploads.
    @ivar leaseInterval: seconds between the rewrites of a running
        multipart upload's lease (its resume checkpoint).
    @ivar resumeMaxUploads: the most parked uploads per user.
    @ivar resumeMaxBytes: the most bytes in parked uploads per user.
    @ivar hashes: the whole-file hashes kept with each object.
    @ivar dirCacheTtl: seconds a directory listing answers lookups of the
        names in it; 0 for no directory cache.
    @ivar workers: how many worker processes serve (C{--workers}); 1 for
        one process serving alone.
    """

    bucket: str = field(validator=_call(checkBucketName))
    endpointURL: str | None = field(
        default=None, validator=validators.optional(_call(checkEndpointURL))
    )
    region: str | None = None
    listen: tuple[str, ...] = field(default=("tcp:2222",), converter=tuple, validator=_nonEmpty)
    keysDir: str = "etc/keys"
    hostKeys: tuple[str, ...] = field(default=(), converter=tuple)
    homeTemplate: str = field(default="{username}/", validator=_call(validateHomeTemplate))
    partSize: int = field(default=DEFAULT_PART_SIZE, validator=_checkPartSize)
    bufferLimit: int = DEFAULT_BUFFER_LIMIT
    memoryLimit: int = DEFAULT_MEMORY_LIMIT
    uploadConcurrency: int = field(default=DEFAULT_UPLOAD_CONCURRENCY)
    limits: Limits = field(factory=Limits)
    drainTimeout: float = field(default=DEFAULT_DRAIN_TIMEOUT)
    metrics: str | None = None
    orphanAge: float = field(default=DEFAULT_ORPHAN_AGE)
    statePrefix: str = DEFAULT_STATE_PREFIX
    cryptoPolicy: CryptoPolicy = MODERN
    objectSettings: ObjectSettings = ObjectSettings()
    defaultPolicy: UserPolicy = UserPolicy()
    resumeTtl: float = field(default=DEFAULT_RESUME_TTL)
    leaseInterval: float = field(default=DEFAULT_LEASE_INTERVAL)
    resumeMaxUploads: int = 100
    resumeMaxBytes: int = 1024**4
    hashes: tuple[str, ...] = DEFAULT_HASHES
    dirCacheTtl: float = field(default=DEFAULT_DIR_CACHE_TTL)
    workers: int = field(default=1)

    @workers.validator
    def _checkWorkers(self, attribute: object, value: int) -> None:
        if not 1 <= value <= MAX_WORKERS:
            raise ValueError(f"workers must be from 1 to {MAX_WORKERS}")

    @dirCacheTtl.validator
    def _checkDirCacheTtl(self, attribute: object, value: float) -> None:
        if not math.isfinite(value) or value < 0:
            raise ValueError("directory cache TTL must be a number of seconds, not negative")

    @resumeTtl.validator
    def _checkResumeTtl(self, attribute: object, value: float) -> None:
        if value < 0:
            raise ValueError("resume TTL must not be negative")

    @leaseInterval.validator
    def _checkLeaseInterval(self, attribute: object, value: float) -> None:
        if value <= 0:
            raise ValueError("lease interval must be positive")

    @orphanAge.validator
    def _checkOrphanAge(self, attribute: object, value: float) -> None:
        if value != 0 and value < 1:
            raise ValueError("orphan age must be 0 (no sweep) or at least 1 second")

    @drainTimeout.validator
    def _checkDrainTimeout(self, attribute: object, value: float) -> None:
        if value < 0:
            raise ValueError("drain timeout must not be negative")

    @uploadConcurrency.validator
    def _checkConcurrency(self, attribute: object, value: int) -> None:
        if not 1 <= value <= MAX_UPLOAD_CONCURRENCY:
            raise ValueError(f"upload concurrency must be between 1 and {MAX_UPLOAD_CONCURRENCY}")

    def __attrs_post_init__(self) -> None:
        checkStatePrefix(self.statePrefix, self.homeTemplate)
        if self.bufferLimit < self.partSize + SLACK:
            raise ValueError(
                f"buffer limit {self.bufferLimit} must be at least the part size "
                f"plus {SLACK // MiB} MiB ({self.partSize + SLACK})"
            )
        if self.memoryLimit < self.bufferLimit:
            raise ValueError(
                f"memory limit {self.memoryLimit} must be at least the buffer "
                f"limit ({self.bufferLimit})"
            )

    @property
    def policy(self) -> UploadPolicy:
        """
        @return: the upload policy these options make.
        """
        return UploadPolicy(
            partSize=self.partSize,
            bufferLimit=self.bufferLimit,
            concurrency=self.uploadConcurrency,
            hashes=self.hashes,
        )

    @property
    def s3Threads(self) -> int:
        """
        @return: how many threads (and pooled HTTP connections) boto3 gets:
            enough for every part the memory limit lets be in flight,
            within L{MIN_S3_THREADS} and L{MAX_S3_THREADS}.
        """
        return max(MIN_S3_THREADS, min(MAX_S3_THREADS, self.memoryLimit // self.partSize))
