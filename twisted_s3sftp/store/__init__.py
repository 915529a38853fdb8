"""
The object store and its contract: L{IObjectStore} and the values it
speaks, the S3 implementation, the in-memory one shipped for tests, the
sans-I/O multipart planner, and upload leases with the orphan sweep.
"""
