"""
Running the service: the audit trail, log output, metrics and health,
graceful drain, and listening services.
"""
