"""
A working demo on one machine: C{python -m twisted_s3sftp.tools.demo} (what
C{tox -e demo} runs).

It starts a local SeaweedFS S3 on loopback with its data under C{.demo/},
creates the bucket C{demo}, makes a demo user key, then runs
C{twistd -n s3sftp} in the foreground and prints the C{sftp} command to
connect.  Ctrl-C stops the gateway and the S3 server.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from twisted.python.filepath import FilePath

from ..ssh.keys import ensurePrivateKey
from .seaweedfs import LocalS3, credentialsEnvironment

BUCKET = "demo"
USER = "demo"


def makeUserKey(privatePath: Path, publicPath: Path, comment: str) -> None:
    """
    Write an ed25519 key pair unless the private key exists: the private
    key (mode 0600) for the client, the public key for the keys directory.

    @param privatePath: where the client's private key goes.
    @param publicPath: where the C{authorized_keys}-format line goes.
    @param comment: the comment on the public key line.
    """
    ensurePrivateKey(FilePath(str(privatePath)))
    private = serialization.load_ssh_private_key(privatePath.read_bytes(), None)
    line = private.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    publicPath.parent.mkdir(parents=True, exist_ok=True)
    publicPath.write_bytes(line + b" " + comment.encode() + b"\n")
    # Key files writable by group or others are ignored, whatever the umask.
    publicPath.chmod(0o644)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--dir", default=".demo", help="demo state (default .demo)")
    parser.add_argument("--port", type=int, default=2222, help="SFTP port (default 2222)")
    args = parser.parse_args(argv)

    root = Path(args.dir).resolve()
    keysDir = root / "keys"
    userKey = root / "demo_user_key"
    root.mkdir(parents=True, exist_ok=True)
    makeUserKey(userKey, keysDir / f"{USER}.pub", "demo@twisted_s3sftp")

    s3 = LocalS3(root / "s3")
    print("Starting SeaweedFS (local S3)...", flush=True)
    s3.start()
    try:
        s3.createBucket(BUCKET)
        hostKey = root / "ssh_host_ed25519_key"
        ensurePrivateKey(FilePath(str(hostKey)))
        twistd = Path(sys.executable).parent / "twistd"
        command = [
            str(twistd),
            "-n",
            "--pidfile=",
            "s3sftp",
            f"--bucket={BUCKET}",
            f"--endpoint-url={s3.endpointURL}",
            f"--listen=tcp:{args.port}:interface=127.0.0.1",
            f"--keys-dir={keysDir}",
            f"--host-key={hostKey}",
        ]
        print(
            f"""
S3:      {s3.endpointURL}  bucket '{BUCKET}'  (data under {root / "s3"})
Users:   {keysDir}/<name>.pub  (drop in more public keys; no restart)
Rights:  {keysDir}/<name>.toml  (optional: e.g. access = "drop-box";
         see etc/policy.example.toml and the README's "Rights per user")

Connect with:

  sftp -P {args.port} -i {userKey} -o StrictHostKeyChecking=no \\
       -o UserKnownHostsFile=/dev/null {USER}@127.0.0.1

Uploads land in s3://{BUCKET}/{USER}/.  Ctrl-C stops the demo.
""",
            flush=True,
        )
        env = dict(os.environ, **credentialsEnvironment())
        gateway = subprocess.Popen(command, env=env)
        try:
            return gateway.wait()
        except KeyboardInterrupt:
            gateway.send_signal(signal.SIGINT)
            return gateway.wait()
    finally:
        s3.stop()


if __name__ == "__main__":
    sys.exit(main())
