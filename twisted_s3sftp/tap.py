"""
C{twistd s3sftp}: command-line options and the service they build.

Every option is checked in L{Options.postOptions}, before twistd starts the
reactor or daemonises: a bad value, an unreadable host key, a missing keys
directory or an unreachable bucket stops the program with exit status 1 and
one line on standard error saying what is wrong (not twistd's full usage
text, which would bury it).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from functools import partial
from typing import Any

from twisted.application.service import IService, MultiService
from twisted.cred.portal import Portal
from twisted.internet.endpoints import AdoptedStreamServerEndpoint, serverFromString
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.filepath import FilePath
from twisted.python.threadpool import ThreadPool

from .config import (
    DEFAULT_BUFFER_LIMIT,
    DEFAULT_DIR_CACHE_TTL,
    DEFAULT_DRAIN_TIMEOUT,
    DEFAULT_LEASE_INTERVAL,
    DEFAULT_MEMORY_LIMIT,
    DEFAULT_ORPHAN_AGE,
    DEFAULT_PART_SIZE,
    DEFAULT_RESUME_TTL,
    DEFAULT_STATE_PREFIX,
    DEFAULT_UPLOAD_CONCURRENCY,
    MAX_WORKERS,
    ServerConfig,
    parseWorkers,
)
from .ops.descriptors import connectionBudget, raiseOpenFileLimit
from .ops.drain import DrainService
from .ops.gathered import GatheredMetricsService
from .ops.handoff import InletService, listenerFactory
from .ops.listener import listeningService
from .ops.logformat import FORMATS, RELAY, configure
from .ops.metrics import Health, Metrics, MetricsService
from .ops.workers import Workers
from .sftp.flow import MemoryLimit
from .sftp.parked import ResumeCaps
from .ssh.admission import Limits, parsePenalties, parseStartups
from .ssh.keys import KeysDirectory, KeysDirectoryChecker, ensurePrivateKey, loadHostKeys
from .ssh.policy import MODERN, POLICIES, CryptoPolicy, sha1Algorithms
from .ssh.session import S3Realm
from .ssh.transport import S3SSHFactory
from .ssh.userpolicy import MAX_POLICY_FILE, UserPolicy, parsePolicy
from .store import hashes, s3
from .store.cached import CachingStore
from .store.dircache import DirectoryCache
from .store.hashes import parseAlgorithms
from .store.interfaces import IObjectStore, ObjectSettings
from .store.leases import Leases, SweepService
from .store.parts import DEFAULT_HASHES, BufferPool, parseSize

log = Logger()

#: The default limits, shown in the options' help.
_DEFAULTS = Limits()

#: The host key used, and created on first start, when none is given.
DEFAULT_HOST_KEY = "etc/ssh_host_ed25519_key"

#: The ECDSA (NIST P-384) host key used, and created, when none is given
#: and the policy offers ECDSA (C{fips}, which allows no ed25519, and
#: C{compat} and C{legacy}, beside the ed25519 one).
DEFAULT_FIPS_HOST_KEY = "etc/ssh_host_ecdsa_key"


def _mib(size: int) -> str:
    return f"{size // (1024 * 1024)}MiB"


class Options(usage.Options):
    """
    C{twistd s3sftp} options.

    @ivar config: the validated L{ServerConfig}, after parsing.
    @ivar hostKeys: the loaded host keys, after parsing.
    @ivar client: the boto3 client, after parsing.
    """

    synopsis = "--bucket BUCKET [options]"
    longdesc = (
        "An SFTP server that streams every upload straight into S3. "
        "S3 credentials come from boto3's own chain (environment, profile, "
        "instance role)."
    )

    optParameters = [
        ["bucket", None, None, "The S3 bucket to store uploads in (required)."],
        ["endpoint-url", None, None, "An S3-compatible endpoint URL (default: AWS)."],
        ["region", None, None, "The S3 region (default: boto3's)."],
        [
            "keys-dir",
            None,
            "etc/keys",
            "Directory of <username>.pub key files and <username>.toml policy files.",
        ],
        [
            "default-policy",
            None,
            None,
            "A policy file (TOML, as <username>.toml) every user's rights are "
            "narrowed by (default: every right).",
        ],
        [
            "storage-class",
            None,
            None,
            "S3 storage class of every object created (default: the bucket's, STANDARD).",
        ],
        ["sse", None, None, "Server-side encryption of every object: AES256 or aws:kms."],
        ["sse-kms-key-id", None, None, "The KMS key for --sse aws:kms (default: S3's)."],
        ["home", None, "{username}/", "Key prefix each user is confined to."],
        [
            "part-size",
            None,
            _mib(DEFAULT_PART_SIZE),
            "Size of the first multipart parts (5MiB to 5GiB); parts double "
            "every 909 parts so a file can reach 5 TiB and beyond.",
        ],
        [
            "buffer-limit",
            None,
            _mib(DEFAULT_BUFFER_LIMIT),
            "Memory one upload may hold (at least part size + 1MiB).",
        ],
        [
            "memory-limit",
            None,
            _mib(DEFAULT_MEMORY_LIMIT),
            "Memory all uploads together may hold.",
        ],
        [
            "upload-concurrency",
            None,
            str(DEFAULT_UPLOAD_CONCURRENCY),
            "Parts of one upload sent to S3 at once.",
        ],
        [
            "login-grace",
            None,
            f"{_DEFAULTS.loginGrace:g}",
            "Seconds from connecting (banner and key exchange included) to logging in.",
        ],
        ["max-auth-tries", None, str(_DEFAULTS.maxAuthTries), "Failed logins per connection."],
        [
            "max-startups",
            None,
            str(_DEFAULTS.maxStartups),
            "Unauthenticated connections served at once; more wait in a "
            "queue (OpenSSH's start:rate:full is read as full: nothing is "
            "dropped at random).",
        ],
        [
            "per-source-max-startups",
            None,
            str(_DEFAULTS.perSourceStartups),
            "Unauthenticated connections served at once per IPv4 address or IPv6 /64.",
        ],
        [
            "max-queued",
            None,
            str(_DEFAULTS.maxQueued),
            "Connections waiting for a slot, in all; beyond, refused.",
        ],
        [
            "per-source-max-queued",
            None,
            str(_DEFAULTS.perSourceQueue),
            "Connections waiting for a slot per IPv4 address or IPv6 /64; beyond, refused.",
        ],
        [
            "per-source-penalties",
            None,
            f"authfail:{_DEFAULTS.authFailPenalty:g} noauth:{_DEFAULTS.noAuthPenalty:g} "
            f"grace-exceeded:{_DEFAULTS.gracePenalty:g} min:{_DEFAULTS.minPenalty:g} "
            f"max:{_DEFAULTS.maxPenalty:g}",
            "Seconds of penalty per source for a connection that failed to log "
            "in, never tried, or ran out of time; a source with more than min "
            "outstanding is refused until it runs out (at most max); 'no' "
            "for none.",
        ],
        [
            "max-user-connections",
            None,
            str(_DEFAULTS.perUser),
            "Logged-in connections per user; one more is disconnected with "
            "a message naming the limit.",
        ],
        ["max-sessions", None, str(_DEFAULTS.maxChannels), "SFTP sessions per connection."],
        [
            "metrics",
            None,
            None,
            "A Twisted endpoint for HTTP /metrics (Prometheus) and /healthz, "
            "e.g. tcp:9100:interface=127.0.0.1 (default: none).",
        ],
        [
            "orphan-age",
            None,
            f"{DEFAULT_ORPHAN_AGE:g}",
            "Seconds after which a multipart upload whose server stopped "
            "renewing its lease (a crash) is aborted; 0 for no sweep.",
        ],
        [
            "resume-ttl",
            None,
            f"{DEFAULT_RESUME_TTL:g}",
            "Seconds an interrupted multipart upload is kept for its client to "
            "resume (0: abort it, as before); the bucket's lifecycle rule must "
            "allow the longest upload plus this.",
        ],
        [
            "resume-max-uploads",
            None,
            "100",
            "Interrupted uploads kept per user; one more aborts the oldest.",
        ],
        [
            "resume-max-bytes",
            None,
            "1TiB",
            "Bytes of interrupted uploads kept per user; more aborts the oldest.",
        ],
        [
            "lease-interval",
            None,
            f"{DEFAULT_LEASE_INTERVAL:g}",
            "Seconds between the rewrites of a running multipart upload's lease: "
            "what a server killed with SIGKILL loses of a resumable upload.",
        ],
        [
            "dir-cache-ttl",
            None,
            f"{DEFAULT_DIR_CACHE_TTL:g}",
            "Seconds a directory's listing answers lookups (stat, OPEN's checks) of the "
            "names in it; what other servers on the bucket change shows within this; "
            "0 turns the cache off.",
        ],
        [
            "hashes",
            None,
            ",".join(DEFAULT_HASHES),
            "Whole-file hashes kept with each object, comma-separated, from "
            "sha256 (always kept), md5 (what rclone verifies with) and sha1.",
        ],
        [
            "state-prefix",
            None,
            DEFAULT_STATE_PREFIX,
            "Where the server keeps its upload leases, outside every home.",
        ],
        [
            "drain-timeout",
            None,
            f"{DEFAULT_DRAIN_TIMEOUT:g}",
            "Seconds running uploads get to finish at shutdown (SIGTERM) before they are aborted.",
        ],
        [
            "log-format",
            None,
            "text",
            "text (human-readable lines) or json (one JSON object per line); "
            "either way, events below info are not written.",
        ],
        [
            "idle-timeout",
            None,
            f"{_DEFAULTS.idleTimeout:g}",
            "Seconds a logged-in connection may send nothing.",
        ],
        [
            "crypto-policy",
            None,
            MODERN.name,
            f"The SSH algorithms offered: {', '.join(POLICIES)} (see the README).",
        ],
        [
            "kex-algorithms",
            None,
            None,
            "Narrow the policy's key exchanges: a,b offers those, -a,b all but those.",
        ],
        ["ciphers", None, None, "Narrow the policy's ciphers, as --kex-algorithms."],
        ["macs", None, None, "Narrow the policy's MACs, as --kex-algorithms."],
        [
            "host-key-algorithms",
            None,
            None,
            "Narrow the policy's host key algorithms, as --kex-algorithms.",
        ],
        [
            "workers",
            None,
            "1",
            "Worker processes serving the listeners (auto: one per CPU); the "
            "parent accepts and hands connections out in turn (see the README).",
        ],
        [
            "worker-channel",
            None,
            None,
            "Internal, set by the parent of --workers: this worker's channel's descriptor.",
        ],
        ["worker-index", None, None, "Internal, set by the parent of --workers: its number."],
        [
            "worker-metrics-fd",
            None,
            None,
            "Internal, set by the parent of --workers: the listening socket for its metrics.",
        ],
    ]

    #: Build the boto3 client (replaced in tests).
    makeClient: Callable[..., Any] = staticmethod(s3.makeClient)

    #: Check the bucket at start-up (replaced in tests).
    checkBucket: Callable[[Any, str], None] = staticmethod(s3.checkBucket)

    def __init__(self) -> None:
        super().__init__()
        #: The arguments as given, which C{--workers} passes on to each worker.
        self.arguments: list[str] = []
        self["listen"] = []
        self["host-key"] = []
        self["penalty-exempt"] = []
        self["object-tag"] = []

    def opt_listen(self, endpoint: str) -> None:
        """
        A Twisted server endpoint to listen on, e.g. tcp:2222 or
        tcp:2222:interface=127.0.0.1; repeatable (default: tcp:2222).
        """
        self["listen"].append(endpoint)

    def opt_host_key(self, path: str) -> None:
        """
        An SSH host private key file; repeatable (default:
        etc/ssh_host_ed25519_key, created on first start).
        """
        self["host-key"].append(path)

    def opt_penalty_exempt(self, network: str) -> None:
        """
        An address or network never penalised, e.g. a load balancer's
        health checks (10.0.0.0/8); repeatable.
        """
        self["penalty-exempt"].append(network)

    def opt_object_tag(self, tag: str) -> None:
        """
        A tag KEY=VALUE for every object created; repeatable.
        """
        key, equals, value = tag.partition("=")
        if not equals:
            raise usage.UsageError(f"--object-tag {tag!r} is not KEY=VALUE")
        self["object-tag"].append((key, value))

    def parseOptions(self, options: list[str] | None = None) -> None:
        self.arguments = list(options) if options is not None else []
        super().parseOptions(options)

    def postOptions(self) -> None:
        try:
            self._validate()
        except ValueError as e:
            raise SystemExit(f"twistd s3sftp: error: {e}") from None
        # twistd reads its log observer from its own options after parsing
        # them all: give it ours, unless the operator chose one (--logger).
        parent = self.parent
        if self["worker-channel"] is not None and parent is not None:
            # A worker's log goes to its parent, which writes it.
            parent["logger"] = configure(RELAY, "-", True)
        elif parent is not None and not parent.get("logger"):
            parent["logger"] = configure(
                self["log-format"], parent.get("logfile"), bool(parent.get("nodaemon"))
            )

    def _validate(self) -> None:
        if not self["bucket"]:
            raise ValueError("--bucket is required")
        sizes = {}
        for name in ("part-size", "buffer-limit", "memory-limit", "resume-max-bytes"):
            try:
                sizes[name] = parseSize(self[name])
            except ValueError as e:
                raise ValueError(f"--{name}: {e}") from None
        try:
            concurrency = int(self["upload-concurrency"])
        except ValueError:
            raise ValueError("--upload-concurrency: not a number") from None
        try:
            maxParked = int(self["resume-max-uploads"])
        except ValueError:
            raise ValueError("--resume-max-uploads: not a number") from None
        try:
            algorithms = parseAlgorithms(self["hashes"])
        except ValueError as e:
            raise ValueError(f"--hashes: {e}") from None
        try:
            workers = parseWorkers(self["workers"], len(os.sched_getaffinity(0)))
        except ValueError as e:
            raise ValueError(f"--workers: {e}") from None
        if not 1 <= workers <= MAX_WORKERS:
            raise ValueError(f"--workers: from 1 to {MAX_WORKERS}")
        self.workerChannel: int | None = None
        self.workerIndex: int | None = None
        self.workerMetricsFD: int | None = None
        metrics = self["metrics"]
        if self["worker-channel"] is not None:
            try:
                self.workerChannel = int(self["worker-channel"])
                self.workerIndex = int(self["worker-index"] or "1")
                if self["worker-metrics-fd"] is not None:
                    self.workerMetricsFD = int(self["worker-metrics-fd"])
            except ValueError:
                raise ValueError("--worker-channel and --worker-index: not numbers") from None
            workers = 1
            # A worker serves its metrics to its parent only, on the socket
            # the parent gave it (--worker-metrics-fd).
            metrics = None
        if self["log-format"] not in FORMATS:
            raise ValueError(f"--log-format must be one of {', '.join(FORMATS)}")
        limits = self._limits()
        cryptoPolicy = self._cryptoPolicy()
        seconds = {}
        for name in (
            "drain-timeout",
            "orphan-age",
            "resume-ttl",
            "lease-interval",
            "dir-cache-ttl",
        ):
            try:
                seconds[name] = float(self[name])
            except ValueError:
                raise ValueError(f"--{name}: not a number of seconds") from None
        self.config = ServerConfig(
            bucket=self["bucket"],
            endpointURL=self["endpoint-url"],
            region=self["region"],
            listen=self["listen"] or ["tcp:2222"],
            keysDir=self["keys-dir"],
            hostKeys=self["host-key"],
            homeTemplate=self["home"],
            partSize=sizes["part-size"],
            bufferLimit=sizes["buffer-limit"],
            memoryLimit=sizes["memory-limit"],
            uploadConcurrency=concurrency,
            limits=limits,
            drainTimeout=seconds["drain-timeout"],
            metrics=metrics,
            orphanAge=seconds["orphan-age"],
            statePrefix=self["state-prefix"],
            cryptoPolicy=cryptoPolicy,
            objectSettings=self._objectSettings(),
            defaultPolicy=self._defaultPolicy(),
            resumeTtl=seconds["resume-ttl"],
            leaseInterval=seconds["lease-interval"],
            resumeMaxUploads=maxParked,
            resumeMaxBytes=sizes["resume-max-bytes"],
            hashes=algorithms,
            dirCacheTtl=seconds["dir-cache-ttl"],
            workers=workers,
        )
        for description in self.config.listen + (
            (self.config.metrics,) if self.config.metrics else ()
        ):
            try:
                # Only parses the description; the reactor is not used.
                serverFromString(None, description)
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(f"endpoint {description!r}: {e}") from None
        if not os.path.isdir(self.config.keysDir):
            raise ValueError(f"--keys-dir {self.config.keysDir!r} is not a directory")
        hostKeyPaths = [FilePath(p) for p in self.config.hostKeys]
        policy = self.config.cryptoPolicy
        if not hostKeyPaths:
            hostKeyPaths = self._defaultHostKeys(policy)
        self.hostKeys = loadHostKeys(hostKeyPaths, policy)
        offered = {a for key in self.hostKeys.values() for a in key.supportedSignatureAlgorithms()}
        if not offered & set(policy.hostKeyAlgorithms):
            raise ValueError(
                "no host key can be offered with the host key algorithms"
                f" {', '.join(a.decode() for a in policy.hostKeyAlgorithms)}"
            )
        self.client = self.makeClient(
            self.config.endpointURL, self.config.region, self.config.s3Threads
        )
        self.checkBucket(self.client, self.config.bucket)

    def _defaultHostKeys(self, policy: CryptoPolicy) -> list[FilePath[str]]:
        """
        The host keys used when none is given, created on first start: an
        ed25519 key if the policy offers ed25519, and an ECDSA (P-384) key
        if it offers ECDSA: under C{compat} and C{legacy}, both, for the
        clients without ed25519 those policies are for.

        @raise ValueError: if one cannot be created.
        """
        algorithms = set(policy.hostKeyAlgorithms)
        wanted = []
        if b"ssh-ed25519" in algorithms:
            wanted.append((DEFAULT_HOST_KEY, "ed25519"))
        if b"ecdsa-sha2-nistp384" in algorithms:
            wanted.append((DEFAULT_FIPS_HOST_KEY, "ecdsa"))
        paths = []
        for path, kind in wanted:
            default = FilePath(path)
            try:
                ensurePrivateKey(default, kind)
            except OSError as e:
                raise ValueError(f"cannot create host key {default.path}: {e.strerror}") from None
            paths.append(default)
        return paths

    def _objectSettings(self) -> ObjectSettings:
        """
        @return: the S3 settings the options ask for.
        @raise ValueError: for a value S3 would refuse.
        """
        try:
            return ObjectSettings(
                self["storage-class"],
                self["sse"],
                self["sse-kms-key-id"],
                self["object-tag"] or None,
            ).checked()
        except ValueError as e:
            raise ValueError(f"object settings: {e}") from None

    def _defaultPolicy(self) -> UserPolicy:
        """
        @return: the policy of C{--default-policy}, or every right.
        @raise ValueError: naming the file, if it is unreadable or invalid.
        """
        path = self["default-policy"]
        if path is None:
            return UserPolicy()
        try:
            with open(path, "rb") as f:
                data = f.read(MAX_POLICY_FILE + 1)
        except OSError as e:
            raise ValueError(f"--default-policy {path}: {e.strerror}") from None
        if len(data) > MAX_POLICY_FILE:
            raise ValueError(f"--default-policy {path}: larger than {MAX_POLICY_FILE} bytes")
        try:
            return parsePolicy(data, self["state-prefix"], isDefault=True)
        except (ValueError, TypeError) as e:
            raise ValueError(f"--default-policy {path}: {e}") from None

    def _cryptoPolicy(self) -> CryptoPolicy:
        """
        @return: the named crypto policy, narrowed as the options ask.
        @raise ValueError: naming the option at fault.
        """
        policy = POLICIES.get(self["crypto-policy"])
        if policy is None:
            raise ValueError(f"--crypto-policy must be one of {', '.join(POLICIES)}")
        return policy.narrowed(
            keyExchanges=self["kex-algorithms"],
            ciphers=self["ciphers"],
            macs=self["macs"],
            hostKeyAlgorithms=self["host-key-algorithms"],
        )

    def _limits(self) -> Limits:
        """
        @return: the limits the options ask for.
        @raise ValueError: naming the option at fault.
        """
        values: dict[str, Any] = {}
        fields: list[tuple[str, str | None, Callable[[str], Any]]] = [
            ("login-grace", "loginGrace", float),
            ("max-auth-tries", "maxAuthTries", int),
            ("per-source-max-startups", "perSourceStartups", int),
            ("max-user-connections", "perUser", int),
            ("max-sessions", "maxChannels", int),
            ("idle-timeout", "idleTimeout", float),
            ("max-startups", "maxStartups", parseStartups),
            ("max-queued", "maxQueued", int),
            ("per-source-max-queued", "perSourceQueue", int),
            ("per-source-penalties", None, parsePenalties),
        ]
        for option, name, kind in fields:
            try:
                value = kind(self[option])
            except ValueError as e:
                raise ValueError(f"--{option}: {e}") from None
            if name is None:
                values.update(value)
            else:
                values[name] = value
        try:
            return Limits(exempt=self["penalty-exempt"], **values)
        except ValueError as e:
            raise ValueError(f"limits: {e}") from None


def makeService(options: Options, reactor: Any = None) -> IService:
    """
    Build the service: the S3 thread pool with the shutdown drain
    (L{DrainService}), and one SSH listener per C{--listen}.

    @param options: parsed L{Options}.
    @param reactor: the reactor; the global one when not given.
    @return: the service for twistd to run.
    """
    if reactor is None:
        from twisted.internet import reactor as globalReactor

        reactor = globalReactor
    config = options.config
    if config.workers > 1:
        return _parentService(options, reactor)
    workerChannel = options.workerChannel
    pool = ThreadPool(minthreads=0, maxthreads=config.s3Threads, name="s3sftp-s3")
    objects = s3.S3ObjectStore(options.client, config.bucket, reactor, pool)
    store: IObjectStore = objects
    if config.dirCacheTtl:
        # A worker's fellow workers store files its cache does not see.
        cache = DirectoryCache(
            config.dirCacheTtl, reactor.seconds, absentKnown=workerChannel is None
        )
        store = CachingStore(objects, cache)
    memory = MemoryLimit(config.memoryLimit, BufferPool(config.policy.bufferLimit))
    resumeTtl = config.resumeTtl if config.orphanAge else 0.0
    unavailable = next(filter(None, map(hashes.problem, config.hashes)), None)
    if resumeTtl and unavailable is not None:
        log.warn(
            "Interrupted uploads cannot be resumed: {reason}; they are aborted",
            reason=unavailable,
        )
        resumeTtl = 0.0
    elif resumeTtl:
        log.info(
            "Interrupted uploads are kept {hours:g} h for their clients to resume",
            hours=resumeTtl / 3600,
        )
    leases = (
        Leases(
            store,
            config.statePrefix,
            config.orphanAge,
            reactor,
            config.objectSettings,
            resumeTtl=resumeTtl,
            interval=config.leaseInterval,
        )
        if config.orphanAge
        else None
    )
    realm = S3Realm(
        store,
        config.homeTemplate,
        config.policy,
        memory,
        reactor,
        leases,
        config.objectSettings,
        ResumeCaps(config.resumeMaxUploads, config.resumeMaxBytes),
        offload=partial(deferToThreadPool, reactor, pool),
    )
    keys = KeysDirectory(FilePath(config.keysDir), config.cryptoPolicy)
    checker = KeysDirectoryChecker(keys, config.defaultPolicy, config.statePrefix, reactor.seconds)
    portal = Portal(realm, [checker])
    budget = connectionBudget(raiseOpenFileLimit())
    limits = config.limits.fitted(budget)
    if limits != config.limits:
        log.warn(
            "The open files limit allows {budget} connections: at most {startups} "
            "served before login and {queued} queued",
            budget=budget,
            startups=limits.maxStartups,
            queued=limits.maxQueued,
        )
    factory = S3SSHFactory(
        portal, options.hostKeys, limits, reactor, config.cryptoPolicy, maxConnections=budget
    )
    if config.cryptoPolicy.name == "legacy":
        log.warn(
            "--crypto-policy legacy offers SHA-1 ({algorithms}): the audit trail's login"
            " events say which clients use it",
            algorithms=", ".join(sha1Algorithms(config.cryptoPolicy)) or "none, as narrowed",
        )
    top = MultiService()
    drain = DrainService(
        realm.uploads, reactor, config.drainTimeout, pool, factory.closeConnections
    )
    drain.setServiceParent(top)
    # Every server on the bucket sweeps; of one server's workers, the
    # first.
    if leases is not None and options.workerIndex in (None, 1):
        SweepService(leases).setServiceParent(top)
    metricsFD = options.workerMetricsFD
    if config.metrics is not None or metricsFD is not None:
        metrics = Metrics(factory.admission, realm.uploads, memory)
        objects.observe = metrics.observeS3
        health = Health(
            store,
            config.homeTemplate.split("{username}")[0],
            reactor,
            accepting=lambda: not realm.uploads.draining,
        )
        MetricsService(
            reactor,
            config.metrics or f"descriptor {metricsFD}, for the parent",
            metrics,
            health,
            drain.drained,
            accessLog=workerChannel is None,
            endpoint=None
            if metricsFD is None
            else AdoptedStreamServerEndpoint(reactor, metricsFD, socket.AF_UNIX),
        ).setServiceParent(top)
    proxied = factory.behindProxy()
    factories = [
        # "haproxy:..." listeners read a PROXY header first: their clients'
        # addresses come from it (twisted.protocols.haproxy).
        proxied if description.startswith("haproxy:") else factory
        for description in config.listen
    ]
    if workerChannel is not None:
        # A worker of --workers: its parent listens, and hands it
        # connections.
        wrapped = [listenerFactory(d, f) for d, f in zip(config.listen, factories, strict=True)]
        InletService(reactor, workerChannel, wrapped, factory).setServiceParent(top)
        return top
    for description, which in zip(config.listen, factories, strict=True):
        listeningService(reactor, description, which, "s3sftp").setServiceParent(top)
    return top


def _parentService(options: Options, reactor: Any) -> IService:
    """
    @return: the parent of C{--workers N}: it listens, hands connections
        to N workers running the same options, and serves C{--metrics}
        for all of them (L{twisted_s3sftp.ops.workers}).
    """
    config = options.config
    top = MultiService()
    workers = Workers(
        reactor,
        config.workers,
        options.arguments,
        config.listen,
        config.drainTimeout,
        withMetrics=config.metrics is not None,
    )
    workers.setServiceParent(top)
    if config.metrics is not None:
        GatheredMetricsService(reactor, config.metrics, workers).setServiceParent(top)
    return top
