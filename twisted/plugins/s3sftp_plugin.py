"""
The twistd dropin for C{twistd s3sftp}; everything else is imported lazily.
"""

from twisted.application.service import ServiceMaker

s3sftp = ServiceMaker(
    "s3sftp",
    "twisted_s3sftp.tap",
    "An SFTP server that streams uploads straight into S3.",
    "s3sftp",
)
