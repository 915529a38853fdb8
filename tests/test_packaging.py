"""
The wheel carries the twistd plugin and the C{s3sftp-keys} command: built,
installed into a fresh venv, and run from there (conch-pitfalls items
17-18).
"""

from __future__ import annotations

import subprocess
import sys
import venv
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheelInstallsPlugin(tmp_path: Path) -> None:
    """
    The wheel has C{twisted/plugins/s3sftp_plugin.py} and no
    C{twisted/__init__.py} or C{twisted/plugins/__init__.py}; installed in
    a fresh venv, C{twistd --help} lists C{s3sftp}, and the
    C{s3sftp-keys} command runs.
    """
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = dist.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "twisted/plugins/s3sftp_plugin.py" in names
    assert "twisted/__init__.py" not in names
    assert "twisted/plugins/__init__.py" not in names

    env = tmp_path / "venv"
    venv.create(env, with_pip=True)
    python = env / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(wheel)],
        check=True,
        capture_output=True,
    )
    listing = subprocess.run(
        [str(env / "bin" / "twistd"), "--help"],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    ).stdout
    assert "s3sftp" in listing
    keys = tmp_path / "keys"
    keys.mkdir()
    listed = subprocess.run(
        [str(env / "bin" / "s3sftp-keys"), "--keys-dir", str(keys), "list"],
        check=True,
        capture_output=True,
        text=True,
    )
    assert listed.stdout == ""
