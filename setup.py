"""
Packaging for twisted_s3sftp.

C{twisted.plugins} has no C{__init__.py} (it must not: it would shadow
Twisted's own), so it is listed explicitly; C{find_packages} would miss it.
"""

import re
from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent
version = re.search(
    r'^__version__ = "([^"]+)"',
    (here / "twisted_s3sftp" / "__init__.py").read_text(),
    re.M,
).group(1)

setup(
    name="twisted_s3sftp",
    version=version,
    description="An SFTP server on Twisted Conch that streams uploads into S3.",
    long_description=(here / "README.md").read_text(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.11",
    packages=find_packages(include=["twisted_s3sftp", "twisted_s3sftp.*"]) + ["twisted.plugins"],
    install_requires=[
        "twisted[conch]>=26.10",
        "cryptography>=48",
        "boto3>=1.36",
        "attrs>=24.1",
        "prometheus_client>=0.20",
        "isal>=1.6",
    ],
    entry_points={
        "console_scripts": ["s3sftp-keys = twisted_s3sftp.tools.keyadmin:main"],
    },
    classifiers=[
        "Framework :: Twisted",
        "Programming Language :: Python :: 3",
    ],
)
