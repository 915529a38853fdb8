"""
Integration tests: a real S3 (SeaweedFS), real gateways, real clients.
"""
