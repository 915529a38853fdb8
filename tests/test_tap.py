"""
Tests for L{twisted_s3sftp.tap} and L{twisted_s3sftp.config}: options fail
early with one clear line.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.application.service import IServiceCollection
from twisted.internet.task import Clock
from twisted.python import usage
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from twisted_s3sftp.config import ServerConfig
from twisted_s3sftp.ssh.admission import Limits
from twisted_s3sftp.store.parts import parseSize
from twisted_s3sftp.tap import Options, makeService


class FakeOptions(Options):
    """
    L{Options} with S3 replaced: no network.
    """

    bucketError: str | None = None

    @staticmethod
    def makeClient(endpointURL: Any, region: Any, connections: int) -> Any:
        return ("client", endpointURL, region)

    def checkBucket(self, client: Any, bucket: str) -> None:  # type: ignore[override]
        if self.bucketError:
            raise ValueError(self.bucketError)


class OptionsTests(SynchronousTestCase):
    """
    L{Options} validates every option before the reactor starts.
    """

    def setUp(self) -> None:
        self.root = FilePath(self.mktemp())
        self.keys = self.root.child("keys")
        self.keys.makedirs()
        self.hostKey = self.root.child("host_key")
        from twisted_s3sftp.ssh.keys import ensurePrivateKey

        ensurePrivateKey(self.hostKey)

    def parse(self, *args: str, options: FakeOptions | None = None) -> FakeOptions:
        """
        Parse C{args} plus a working keys directory and host key.
        """
        options = options or FakeOptions()
        options.parseOptions(["--keys-dir", self.keys.path, "--host-key", self.hostKey.path, *args])
        return options

    def error(self, *args: str, options: FakeOptions | None = None) -> str:
        """
        @return: the one line the program exits with.
        """
        e = self.assertRaises(SystemExit, self.parse, *args, options=options)
        message = str(e.code)
        self.assertTrue(message.startswith("twistd s3sftp: error: "), message)
        self.assertNotIn("\n", message)
        return message

    def test_defaults(self) -> None:
        """
        Only C{--bucket} is required; the defaults are documented ones.
        """
        config = self.parse("--bucket", "my-bucket").config
        self.assertEqual(config.listen, ("tcp:2222",))
        self.assertEqual(config.homeTemplate, "{username}/")
        self.assertEqual(config.partSize, 8 * 1024 * 1024)
        self.assertIsNone(config.endpointURL)

    def test_everything(self) -> None:
        """
        Repeatable options accumulate and every value is kept.
        """
        options = self.parse(
            "--bucket",
            "b.example-1",
            "--endpoint-url",
            "http://127.0.0.1:9000",
            "--region",
            "eu-west-1",
            "--listen",
            "tcp:0:interface=127.0.0.1",
            "--listen",
            "tcp6:0:interface=\\:\\:1",
            "--home",
            "sftp/{username}/",
            "--part-size",
            "16MiB",
        )
        config = options.config
        self.assertEqual(len(config.listen), 2)
        self.assertEqual(config.partSize, 16 * 1024 * 1024)
        self.assertEqual(options.client, ("client", "http://127.0.0.1:9000", "eu-west-1"))
        self.assertEqual(list(options.hostKeys), [b"ssh-ed25519"])

    def test_limits(self) -> None:
        """
        The limits before and after login default to OpenSSH's where it
        has them (C{start:rate:full} is read as C{full}), and each option
        sets its own.
        """
        self.assertEqual(self.parse("--bucket", "b-1").config.limits, Limits())
        limits = self.parse(
            "--bucket",
            "b-1",
            "--login-grace",
            "10",
            "--max-auth-tries",
            "3",
            "--max-startups",
            "5:50:20",
            "--per-source-max-startups",
            "2",
            "--max-queued",
            "30",
            "--per-source-max-queued",
            "7",
            "--per-source-penalties",
            "authfail:30 max:60",
            "--penalty-exempt",
            "10.0.0.0/8",
            "--penalty-exempt",
            "::1",
            "--max-user-connections",
            "4",
            "--max-sessions",
            "1",
            "--idle-timeout",
            "60",
        ).config.limits
        self.assertEqual(
            limits,
            Limits(
                loginGrace=10,
                maxAuthTries=3,
                maxStartups=20,
                perSourceStartups=2,
                maxQueued=30,
                perSourceQueue=7,
                authFailPenalty=30,
                maxPenalty=60,
                exempt=("10.0.0.0/8", "::1"),
                perUser=4,
                maxChannels=1,
                idleTimeout=60,
            ),
        )

    def test_badValues(self) -> None:
        """
        Each bad value is named in the one-line error.
        """
        cases = [
            ((), "--bucket is required"),
            (("--bucket", "Bad_Bucket"), "not a valid bucket name"),
            (("--bucket", "ok-bucket", "--endpoint-url", "ftp://x"), "not an http"),
            (("--bucket", "ok-bucket", "--part-size", "1MiB"), "part size"),
            (("--bucket", "ok-bucket", "--part-size", "lots"), "--part-size"),
            (("--bucket", "ok-bucket", "--home", "shared/"), "{username}"),
            (("--bucket", "ok-bucket", "--listen", "nonsense:1"), "nonsense:1"),
            (("--bucket", "ok-bucket", "--metrics", "nonsense:2"), "nonsense:2"),
            (("--bucket", "ok-bucket", "--host-key", "/nonexistent"), "host key"),
            (("--bucket", "ok-bucket", "--login-grace", "soon"), "--login-grace"),
            (("--bucket", "ok-bucket", "--max-startups", "1:2"), "--max-startups"),
            (("--bucket", "ok-bucket", "--per-source-penalties", "crash:1"), "crash"),
            (("--bucket", "ok-bucket", "--penalty-exempt", "nowhere"), "not a network"),
            (("--bucket", "ok-bucket", "--max-sessions", "0"), "at least 1"),
            (("--bucket", "ok-bucket", "--max-queued", "-1"), "not be negative"),
            (("--bucket", "ok-bucket", "--orphan-age", "0.5"), "at least 1 second"),
            (("--bucket", "ok-bucket", "--state-prefix", "leases/"), "inside the home"),
            (("--bucket", "ok-bucket", "--state-prefix", "x"), "end with"),
        ]
        for args, expected in cases:
            with self.subTest(args=args):
                self.assertIn(expected, self.error(*args))

    def test_objectSettingsAndDefaultPolicy(self) -> None:
        """
        The S3 settings and C{--default-policy} are parsed into the
        configuration; a bad value or policy file is named in the one-line
        error.
        """
        from twisted_s3sftp.store.interfaces import ObjectSettings

        policy = self.root.child("default.toml")
        policy.setContent(b'access = "read-only"\nallow_from = ["10.0.0.0/8"]\n')
        options = self.parse(
            "--bucket=b-bucket",
            "--storage-class=STANDARD_IA",
            "--sse=aws:kms",
            "--sse-kms-key-id=k",
            "--object-tag=team=ops",
            "--object-tag=cost=a=b",
            f"--default-policy={policy.path}",
        )
        self.assertEqual(
            options.config.objectSettings,
            ObjectSettings("STANDARD_IA", "aws:kms", "k", [("team", "ops"), ("cost", "a=b")]),
        )
        self.assertEqual(options.config.defaultPolicy.rights.describe(), "read-only")
        broken = self.root.child("broken.toml")
        broken.setContent(b"access = []\n")
        homed = self.root.child("homed.toml")
        homed.setContent(b'home = "x/"\n')
        cases = [
            (("--storage-class", "COLD"), "storage class"),
            (("--sse", "rot13"), "AES256 or aws:kms"),
            (("--sse-kms-key-id", "k"), "needs sse aws:kms"),
            (("--object-tag", "a<b=c"), "tag"),
            (("--default-policy", "/nonexistent.toml"), "--default-policy /nonexistent.toml"),
            (("--default-policy", broken.path), "access must be one of"),
            (("--default-policy", homed.path), "belongs in a user's policy file"),
        ]
        for args, expected in cases:
            with self.subTest(args=args):
                self.assertIn(expected, self.error("--bucket", "ok-bucket", *args))
        self.assertRaises(usage.UsageError, self.parse, "--bucket=b-bucket", "--object-tag=novalue")

    def test_missingKeysDir(self) -> None:
        """
        A keys directory that does not exist is an error.
        """
        message = self.error("--bucket", "ok-bucket", "--keys-dir", "/nonexistent/keys")
        self.assertIn("--keys-dir", message)

    def test_unreachableBucket(self) -> None:
        """
        A bucket the start-up check cannot reach stops the program.
        """
        options = FakeOptions()
        options.bucketError = "bucket 'ok-bucket' does not exist"
        self.assertIn("does not exist", self.error("--bucket", "ok-bucket", options=options))

    def test_defaultHostKeyCreated(self) -> None:
        """
        Without C{--host-key}, C{etc/ssh_host_ed25519_key} (relative to the
        working directory) is created with mode 0600 and used.
        """
        cwd = os.getcwd()
        self.root.child("run").makedirs()
        os.chdir(self.root.child("run").path)
        self.addCleanup(os.chdir, cwd)
        options = FakeOptions()
        options.parseOptions(["--bucket", "ok-bucket", "--keys-dir", self.keys.path])
        created = self.root.child("run").child("etc").child("ssh_host_ed25519_key")
        self.assertEqual(os.stat(created.path).st_mode & 0o777, 0o600)
        self.assertEqual(list(options.hostKeys), [b"ssh-ed25519"])

    def test_fipsHostKeyCreated(self) -> None:
        """
        Under C{--crypto-policy fips} without C{--host-key}, an ECDSA
        (NIST P-384) host key is created instead, since ed25519 is not
        allowed there.
        """
        cwd = os.getcwd()
        self.root.child("run").makedirs()
        os.chdir(self.root.child("run").path)
        self.addCleanup(os.chdir, cwd)
        options = FakeOptions()
        options.parseOptions(
            ["--bucket", "ok-bucket", "--keys-dir", self.keys.path, "--crypto-policy", "fips"]
        )
        created = self.root.child("run").child("etc").child("ssh_host_ecdsa_key")
        self.assertEqual(os.stat(created.path).st_mode & 0o777, 0o600)
        self.assertEqual(list(options.hostKeys), [b"ecdsa-sha2-nistp384"])
        self.assertEqual(options.config.cryptoPolicy.name, "fips")

    def test_compatHostKeysCreated(self) -> None:
        """
        Under C{compat} without C{--host-key}, both an ed25519 and an ECDSA
        host key are created, for the clients without ed25519 that policy
        is for; narrowed to ECDSA, only the ECDSA one.
        """
        cwd = os.getcwd()
        self.root.child("run").makedirs()
        os.chdir(self.root.child("run").path)
        self.addCleanup(os.chdir, cwd)
        options = FakeOptions()
        base = ["--bucket", "ok-bucket", "--keys-dir", self.keys.path, "--crypto-policy", "compat"]
        options.parseOptions(base)
        self.assertEqual(sorted(options.hostKeys), [b"ecdsa-sha2-nistp384", b"ssh-ed25519"])
        narrowed = FakeOptions()
        narrowed.parseOptions([*base, "--host-key-algorithms", "ecdsa-sha2-nistp384"])
        self.assertIn(b"ecdsa-sha2-nistp384", narrowed.hostKeys)

    def test_cryptoPolicyErrors(self) -> None:
        """
        An unknown policy, an ed25519 host key under C{fips}, a name the
        policy does not allow in a narrowing option, or host key algorithms
        that leave no host key to offer, each stop the server with one line.
        """
        self.assertIn(
            "--crypto-policy must be one of",
            self.error("--bucket", "ok-bucket", "--crypto-policy", "x"),
        )
        self.assertIn(
            "ed25519 host keys are not offered under --crypto-policy fips",
            self.error("--bucket", "ok-bucket", "--crypto-policy", "fips"),
        )
        message = self.error("--bucket", "ok-bucket", "--ciphers", "aes128-cbc")
        self.assertIn("--ciphers: aes128-cbc not allowed under --crypto-policy modern", message)
        self.assertIn("aes128-gcm@openssh.com", message)
        self.assertIn(
            "no host key can be offered",
            self.error("--bucket", "ok-bucket", "--host-key-algorithms", "rsa-sha2-512"),
        )

    def test_cryptoPolicyNarrowed(self) -> None:
        """
        The narrowing options replace or remove names in the policy's lists.
        """
        policy = self.parse(
            "--bucket",
            "ok-bucket",
            "--crypto-policy",
            "compat",
            "--kex-algorithms",
            "-mlkem768x25519-sha256",
            "--ciphers",
            "aes256-gcm@openssh.com,aes128-gcm@openssh.com",
        ).config.cryptoPolicy
        self.assertEqual(policy.name, "compat")
        self.assertNotIn(b"mlkem768x25519-sha256", policy.keyExchanges)
        self.assertIn(b"ecdh-sha2-nistp256", policy.keyExchanges)
        self.assertEqual(policy.ciphers, (b"aes256-gcm@openssh.com", b"aes128-gcm@openssh.com"))

    def test_makeService(self) -> None:
        """
        The service holds the S3 thread pool with the drain, the orphan
        sweep, and one listener per C{--listen}; C{--orphan-age 0} leaves
        the sweep out.
        """
        options = self.parse("--bucket", "ok-bucket", "--listen", "tcp:0", "--listen", "tcp:0")
        service = makeService(options, reactor=Clock())
        self.assertEqual(len(list(IServiceCollection(service))), 4)
        options = self.parse("--bucket", "ok-bucket", "--orphan-age", "0")
        self.assertEqual(len(list(IServiceCollection(makeService(options, reactor=Clock())))), 2)

    def sweepLeases(self, options: FakeOptions) -> Any:
        """
        @return: the L{Leases} of the service's sweep.
        """
        from twisted_s3sftp.store.leases import SweepService

        service = makeService(options, reactor=Clock())
        (sweep,) = [s for s in IServiceCollection(service) if isinstance(s, SweepService)]
        return sweep.leases

    def test_resumeOptions(self) -> None:
        """
        C{--resume-ttl}, C{--resume-max-uploads}, C{--resume-max-bytes} and
        C{--lease-interval} are kept; bad values are refused.
        """
        config = self.parse(
            "--bucket",
            "ok-bucket",
            "--resume-ttl",
            "60",
            "--resume-max-uploads",
            "5",
            "--resume-max-bytes",
            "1GiB",
            "--lease-interval",
            "2",
        ).config
        self.assertEqual(
            (
                config.resumeTtl,
                config.resumeMaxUploads,
                config.resumeMaxBytes,
                config.leaseInterval,
            ),
            (60.0, 5, 1024**3, 2.0),
        )
        for bad in (
            ("--resume-ttl", "-1"),
            ("--lease-interval", "0"),
            ("--resume-max-uploads", "x"),
            ("--resume-max-bytes", "lots"),
        ):
            self.error("--bucket", "ok-bucket", *bad)

    def test_dirCache(self) -> None:
        """
        C{--dir-cache-ttl} defaults to 5 seconds, with every S3 call going
        through a L{CachingStore}; C{0} leaves the store as it is; a
        negative, infinite, NaN or unreadable value is refused.
        """
        from twisted_s3sftp.store.cached import CachingStore
        from twisted_s3sftp.store.s3 import S3ObjectStore

        options = self.parse("--bucket", "ok-bucket")
        self.assertEqual(options.config.dirCacheTtl, 5.0)
        store = self.sweepLeases(options).store
        self.assertIsInstance(store, CachingStore)
        self.assertEqual(store.cache.ttl, 5.0)
        options = self.parse("--bucket", "ok-bucket", "--dir-cache-ttl", "0")
        self.assertIsInstance(self.sweepLeases(options).store, S3ObjectStore)
        for bad in ("-1", "nan", "inf"):
            self.assertIn("not negative", self.error("--bucket", "b-1", "--dir-cache-ttl", bad))
        self.assertIn("--dir-cache-ttl", self.error("--bucket", "b-1", "--dir-cache-ttl", "soon"))

    def test_workers(self) -> None:
        """
        C{--workers N} makes the parent: one L{Workers} service given the
        arguments as parsed, and the gathered metrics with C{--metrics};
        C{auto} is one per CPU; 0, more than the most or a word is refused.
        """
        import os

        from twisted_s3sftp.ops.gathered import GatheredMetricsService
        from twisted_s3sftp.ops.workers import Workers

        options = self.parse("--bucket", "ok-bucket", "--workers", "2", "--metrics", "tcp:0")
        self.assertEqual(options.config.workers, 2)
        self.assertIn("--workers", options.arguments)
        services = list(IServiceCollection(makeService(options, reactor=Clock())))
        self.assertEqual([type(s) for s in services], [Workers, GatheredMetricsService])
        self.assertEqual(services[0].arguments, options.arguments)
        self.assertEqual(services[0].count, 2)
        auto = self.parse("--bucket", "ok-bucket", "--workers", "auto").config.workers
        self.assertEqual(auto, len(os.sched_getaffinity(0)))
        one = self.parse("--bucket", "ok-bucket", "--metrics", "tcp:0")
        self.assertNotIn(Workers, [type(s) for s in IServiceCollection(makeService(one, Clock()))])
        for bad in ("0", "257", "many"):
            self.assertIn("--workers", self.error("--bucket", "b-1", "--workers", bad))

    def test_worker(self) -> None:
        """
        A worker (C{--worker-channel}) serves alone, whatever C{--workers}
        says: no listener of its own, but the connections of its channel;
        only worker 1 sweeps orphans.
        """
        import socket

        from twisted.application.internet import StreamServerEndpointService

        from twisted_s3sftp.ops.handoff import InletService
        from twisted_s3sftp.store.leases import SweepService

        parentEnd, workerEnd = socket.socketpair()
        self.addCleanup(parentEnd.close)
        self.addCleanup(workerEnd.close)
        kinds = {}
        for index in ("1", "2"):
            options = self.parse(
                "--bucket",
                "ok-bucket",
                "--workers",
                "2",
                "--worker-channel",
                str(workerEnd.fileno()),
                "--worker-index",
                index,
            )
            self.assertEqual(options.config.workers, 1)
            service = makeService(options, reactor=Clock())
            kinds[index] = [type(s) for s in IServiceCollection(service)]
            inlet = [s for s in IServiceCollection(service) if isinstance(s, InletService)]
            # The channel's socket object must not close the test's.
            inlet[0].inlet.socket.detach()
        for found in kinds.values():
            self.assertIn(InletService, found)
            self.assertNotIn(StreamServerEndpointService, found)
        self.assertIn(SweepService, kinds["1"])
        self.assertNotIn(SweepService, kinds["2"])

    def test_unavailable(self) -> None:
        """
        When the saved SHA-256 state fails its self-test, the server says
        so at start-up and aborts interrupted uploads rather than store a
        wrong hash; otherwise it keeps them for the TTL.
        """
        from twisted.logger import capturedLogs

        from twisted_s3sftp.store import hashes

        options = self.parse("--bucket", "ok-bucket")
        self.assertEqual(self.sweepLeases(options).resumeTtl, 24 * 3600)
        self.patch(hashes, "problem", lambda algorithm="sha256": "no SHA256_CTX here")
        with capturedLogs() as events:
            leases = self.sweepLeases(options)
        self.assertEqual(leases.resumeTtl, 0)
        self.assertTrue(
            any("cannot be resumed" in str(e.get("log_format")) for e in events), events
        )


class ConfigTests(SynchronousTestCase):
    """
    L{ServerConfig} and L{parseSize}.
    """

    def test_sizes(self) -> None:
        """
        Sizes take plain bytes and binary K, M and G units.
        """
        self.assertEqual(parseSize("5242880"), 5 * 1024 * 1024)
        self.assertEqual(parseSize("8M"), 8 * 1024 * 1024)
        self.assertEqual(parseSize("8MiB"), 8 * 1024 * 1024)
        self.assertEqual(parseSize("1g"), 1024**3)
        self.assertRaises(ValueError, parseSize, "8 potatoes")

    def test_frozen(self) -> None:
        """
        A config cannot be changed once built.
        """
        import attrs

        config = ServerConfig(bucket="abc")
        self.assertRaises(attrs.exceptions.FrozenInstanceError, setattr, config, "bucket", "x")


class DocumentationTests(SynchronousTestCase):
    """
    The README's configuration reference is complete.
    """

    def test_everyOptionDocumented(self) -> None:
        """
        Every option of C{twistd s3sftp} has a row in the README's option
        tables, with its default.
        """
        from pathlib import Path

        readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
        names = [name for name, _, _, _ in Options.optParameters] + [
            "listen",
            "host-key",
            "penalty-exempt",
            "object-tag",
        ]
        for name in names:
            self.assertIn(f"| `--{name}` |", readme, name)
