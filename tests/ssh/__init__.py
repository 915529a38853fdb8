"""
Tests for L{twisted_s3sftp.ssh}.
"""
