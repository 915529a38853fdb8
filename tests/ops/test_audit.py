"""
Tests for L{twisted_s3sftp.ops.audit} and L{twisted_s3sftp.ops.logformat}: one
structured event per login, upload, download, rename, remove, mkdir and
rmdir, written as text or as JSON lines.
"""

from __future__ import annotations

import io
import json
from typing import Any

from twisted.internet.task import Clock
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.python.usage import Options as UsageOptions
from twisted.trial.unittest import SynchronousTestCase

from tests.sftp.test_server import PART, WRITE, SFTPTestCase, makeServer
from tests.test_tap import FakeOptions
from twisted_s3sftp.ops.audit import audit, safeName
from twisted_s3sftp.ops.logformat import jsonFileObserver, jsonRecord, observerFactory


class Events:
    """
    Collects the audit events logged while it is installed.
    """

    def __init__(self, test: SynchronousTestCase) -> None:
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.observe)
        test.addCleanup(globalLogPublisher.removeObserver, self.observe)

    def observe(self, event: dict[str, Any]) -> None:
        if "audit" in event:
            self.events.append(event)

    def of(self, kind: str) -> list[dict[str, Any]]:
        """
        @return: the events of kind C{kind}.
        """
        return [event for event in self.events if event["audit"] == kind]


class OperationEventTests(SFTPTestCase):
    """
    Each operation leaves one audit event with its facts.
    """

    def test_uploadStored(self) -> None:
        """
        A stored upload's event has the user, path, bucket, key, size,
        parts, SHA-256, ETag and duration.
        """
        events = Events(self)
        clock = Clock()
        server, store = makeServer(clock=clock)
        f = self.successResultOf(server.openFile(b"/in/a.csv", WRITE, {}))
        clock.advance(2.5)
        data = b"q" * (PART + 10)
        for offset in range(0, len(data), 32768):
            self.successResultOf(f.writeChunk(offset, data[offset : offset + 32768]))
        self.successResultOf(f.close())
        (event,) = events.of("upload")
        self.assertEqual(
            {
                k: event[k]
                for k in ("outcome", "user", "path", "bucket", "key", "bytes", "parts", "seconds")
            },
            {
                "outcome": "stored",
                "user": "alice",
                "path": "/in/a.csv",
                "bucket": "memory",
                "key": "alice/in/a.csv",
                "bytes": len(data),
                "parts": 2,
                "seconds": 2.5,
            },
        )
        self.assertEqual(event["etag"], store._info("alice/in/a.csv").etag)
        self.assertEqual(len(event["sha256"]), 64)
        self.assertEqual(event["log_level"], LogLevel.info)

    def test_uploadFailedAndAborted(self) -> None:
        """
        A failed upload's event says C{failed} and why, at C{warn}; an
        aborted one says C{aborted}.
        """
        events = Events(self)
        server, store = makeServer()
        store.failNext("putObject")
        f = self.successResultOf(server.openFile(b"a", WRITE, {}))
        self.successResultOf(f.writeChunk(0, b"abc"))
        self.failureResultOf(f.close())
        g = self.successResultOf(server.openFile(b"b", WRITE, {}))
        g.abort("connection lost")
        failed, aborted = events.of("upload")
        self.assertEqual((failed["outcome"], failed["log_level"]), ("failed", LogLevel.warn))
        self.assertIn("InternalError", failed["reason"])
        self.assertEqual((aborted["outcome"], aborted["reason"]), ("aborted", "connection lost"))

    def test_namespaceOperations(self) -> None:
        """
        Download, rename, remove, mkdir and rmdir each leave one event.
        """
        server, store = makeServer()
        self.upload(server, b"f", b"hello")
        events = Events(self)
        d = self.successResultOf(server.openFile(b"f", 1, {}))
        self.successResultOf(d.readChunk(0, 100))
        self.successResultOf(d.close())
        self.successResultOf(server.renameFile(b"f", b"g"))
        self.successResultOf(server.removeFile(b"g"))
        self.successResultOf(server.makeDirectory(b"dir", {}))
        self.successResultOf(server.removeDirectory(b"dir"))
        kinds = [event["audit"] for event in events.events]
        self.assertEqual(kinds, ["download", "rename", "remove", "mkdir", "rmdir"])
        download, rename, remove, mkdir, rmdir = events.events
        self.assertEqual((download["bytes"], download["size"], download["path"]), (5, 5, "/f"))
        self.assertEqual((rename["path"], rename["to"], rename["toKey"]), ("/f", "/g", "alice/g"))
        self.assertEqual(
            (remove["key"], mkdir["key"], rmdir["key"]), ("alice/g", "alice/dir/", "alice/dir/")
        )


class FormatTests(SynchronousTestCase):
    """
    The text and JSON log formats.
    """

    def test_jsonLine(self) -> None:
        """
        A JSON line holds the time, level, namespace, message and every
        field; values JSON cannot hold are strings; helper fields are left
        out.
        """
        out = io.StringIO()
        observer = jsonFileObserver(out)
        globalLogPublisher.addObserver(observer)
        try:
            audit("remove", user="alice", path="/x", bucket="b", key="alice/x")
        finally:
            globalLogPublisher.removeObserver(observer)
        (line,) = out.getvalue().splitlines()
        record = json.loads(line)
        self.assertEqual(record["audit"], "remove")
        self.assertEqual(record["message"], "remove: alice /x (s3://b/alice/x)")
        self.assertEqual((record["level"], record["namespace"]), ("info", "twisted_s3sftp.audit"))
        self.assertNotIn("_why", record)
        self.assertTrue(record["time"].endswith("+00:00"))
        self.assertIn(
            "odd", jsonRecord({"log_format": "{x}", "x": object(), "odd": {1, 2}, "log_time": 0})
        )

    def test_missingFact(self) -> None:
        """
        An audit event missing a fact its message names is still logged,
        with every fact it has, and no exception reaches the caller.
        """
        events: list[dict[str, object]] = []
        globalLogPublisher.addObserver(events.append)
        try:
            audit("remove", user="alice", path="/x", bucket="b")
        finally:
            globalLogPublisher.removeObserver(events.append)
        (event,) = [e for e in events if e.get("audit") == "remove"]
        self.assertEqual((event["user"], event["path"]), ("alice", "/x"))
        self.assertIn("Unable to format event", formatEvent(event))

    def test_debugDropped(self) -> None:
        """
        Both formats write info and above only.
        """
        path = self.mktemp()
        for logFormat in ("text", "json"):
            observer = observerFactory(logFormat, path, False)()
            observer(
                {
                    "log_level": LogLevel.debug,
                    "log_format": "chatter",
                    "log_time": 0,
                    "log_namespace": "x",
                }
            )
            observer(
                {
                    "log_level": LogLevel.info,
                    "log_format": "kept",
                    "log_time": 0,
                    "log_namespace": "x",
                }
            )
        with open(path) as f:
            text = f.read()
        self.assertNotIn("chatter", text)
        self.assertEqual(text.count("kept"), 2)

    def test_twistdLogger(self) -> None:
        """
        C{--log-format} gives twistd its log observer, unless twistd was
        given one with C{--logger}.
        """

        class Twistd(UsageOptions):
            optParameters = [["logfile", None, None, ""], ["logger", None, None, ""]]
            optFlags = [["nodaemon", "n", ""]]

        keys = self.mktemp()
        import os

        os.mkdir(keys)
        parent = Twistd()
        parent.parseOptions([])
        options = FakeOptions()
        options.parent = parent
        options.parseOptions(["--bucket", "b-1", "--keys-dir", keys, "--log-format", "json"])
        self.assertEqual(parent["logger"], "twisted_s3sftp.ops.logformat.chosenObserver")
        from twisted.python.reflect import namedAny

        self.assertTrue(callable(namedAny(parent["logger"])))
        chosen = Twistd()
        chosen.parseOptions(["--logger", "x.y"])
        options = FakeOptions()
        options.parent = chosen
        options.parseOptions(["--bucket", "b-1", "--keys-dir", keys])
        self.assertEqual(chosen["logger"], "x.y")

    def test_safeName(self) -> None:
        """
        Names clients send are logged with control characters and bad
        UTF-8 escaped.
        """
        self.assertEqual(safeName(b"bob\n\x1b[31m\xff"), "bob\\x0a\\x1b[31m\\xff")


class LoginEventTests(SynchronousTestCase):
    """
    Logins, successful or not, leave an event with the key's fingerprint.
    """

    def test_success(self) -> None:
        """
        A login records the user, source address, method, the SHA256
        fingerprint of the key used, and the algorithms negotiated.
        """
        from tests.ssh.test_transport import Harness, hostKey, loginOverLoopback
        from twisted_s3sftp.ssh.keys import fingerprint

        events = Events(self)
        harness = Harness(self)
        key = hostKey()
        harness.addUser("alice", key)
        self.assertTrue(loginOverLoopback(harness, key, b"alice").loggedIn)
        wrong = hostKey()
        self.assertFalse(loginOverLoopback(harness, wrong, b"alice").loggedIn)
        logins = events.of("login")
        success = [e for e in logins if e["outcome"] == "success"]
        failures = [e for e in logins if e["outcome"] == "failure"]
        self.assertEqual(len(success), 1)
        self.assertEqual(
            (
                success[0]["user"],
                success[0]["source"],
                success[0]["fingerprint"],
                success[0]["method"],
            ),
            ("alice", "10.0.0.9", fingerprint(key), "publickey"),
        )
        self.assertEqual(
            {key: success[0][key] for key in ("kex", "hostKeyAlgorithm", "cipher", "mac")},
            {
                "kex": "curve25519-sha256",
                "hostKeyAlgorithm": "ssh-ed25519",
                "cipher": "aes256-ctr",
                "mac": "hmac-sha2-512",
            },
        )
        self.assertEqual({e["fingerprint"] for e in failures}, {fingerprint(wrong)})
        self.assertTrue(all(e["reason"] for e in failures))
