"""
Tests for twisted_s3sftp.
"""
