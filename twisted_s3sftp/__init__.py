"""
An SFTP server on Twisted Conch that streams every upload straight into S3.

See the README for how to run it; L{twisted_s3sftp.tap} is the twistd entry
point.
"""

__version__ = "0.1.0"
