"""
Commands beside the server: C{s3sftp-keys}, the local SeaweedFS for tests
and the demo, and the demo itself.
"""
