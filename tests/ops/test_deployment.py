"""
The deployment files in C{etc/}: the systemd unit and the keys directory's
README.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from tests.test_tap import FakeOptions

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "etc" / "s3sftp.service"


def unitSettings() -> dict[str, list[str]]:
    """
    @return: every C{Key=value} of the unit, continuation lines joined.
    """
    settings: dict[str, list[str]] = {}
    text = UNIT.read_text().replace("\\\n", " ")
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


class SystemdUnitTests(SynchronousTestCase):
    """
    C{etc/s3sftp.service} runs the server unprivileged on a read-only file
    system.
    """

    def test_hardened(self) -> None:
        """
        The unit runs as its own user with the hardening the issue names:
        the whole file system read-only but the state directory, private
        /tmp, no new privileges, no capabilities.
        """
        settings = unitSettings()
        for key, value in [
            ("User", "s3sftp"),
            ("ProtectSystem", "strict"),
            ("ProtectHome", "true"),
            ("PrivateTmp", "true"),
            ("NoNewPrivileges", "true"),
            ("StateDirectory", "s3sftp"),
            ("CapabilityBoundingSet", ""),
        ]:
            self.assertEqual(settings.get(key), [value], key)
        self.assertNotIn("ReadWritePaths", settings)

    def test_commandLine(self) -> None:
        """
        The unit's C{twistd} command line is one the server accepts.
        """
        (command,) = unitSettings()["ExecStart"]
        argv = shlex.split(command.replace("${S3SFTP_BUCKET}", "my-bucket"))
        self.assertEqual(argv[0], "/opt/s3sftp/bin/twistd")
        subcommand = argv.index("s3sftp")
        self.assertIn("--nodaemon", argv[:subcommand])
        keys = Path(self.mktemp())
        keys.mkdir()
        args = [keys.as_posix() if a == "/etc/s3sftp/keys" else a for a in argv[subcommand + 1 :]]
        hostKey = Path(self.mktemp())
        from twisted.python.filepath import FilePath

        from twisted_s3sftp.ssh.keys import ensurePrivateKey

        ensurePrivateKey(FilePath(str(hostKey)))
        options = FakeOptions()
        options.parseOptions([*args, "--host-key", str(hostKey)])
        self.assertEqual(options.config.bucket, "my-bucket")
        self.assertEqual(options.config.listen, ("tcp:2222",))

    def test_systemdAccepts(self) -> None:
        """
        C{systemd-analyze verify} finds nothing wrong with the unit (its
        C{twistd} pointed at this environment's).
        """
        analyze = shutil.which("systemd-analyze")
        self.assertIsNotNone(analyze, "systemd-analyze is needed (.ci/run installs systemd)")
        twistd = Path(sys.executable).parent / "twistd"
        unit = Path(self.mktemp())
        unit.mkdir()
        copy = unit / "s3sftp.service"
        copy.write_text(UNIT.read_text().replace("/opt/s3sftp/bin/twistd", str(twistd)))
        result = subprocess.run(
            [str(analyze), "verify", str(copy)], capture_output=True, text=True, timeout=60
        )
        problems = [
            line
            for line in (result.stdout + result.stderr).splitlines()
            if "s3sftp.service" in line
        ]
        self.assertEqual(problems, [])


class KeysReadmeTests(SynchronousTestCase):
    """
    C{etc/keys/README} ships with the keys directory and is never a user.
    """

    def test_notAUser(self) -> None:
        """
        The README is in the keys directory, names the admin command, and
        is not a key file.
        """
        readme = ROOT / "etc" / "keys" / "README"
        self.assertIn("s3sftp-keys", readme.read_text())
        self.assertFalse(readme.name.endswith(".pub"))
