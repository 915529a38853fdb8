"""
The SSH front door: the factory and transport with their authentication
limits, the crypto policy, admission before login, user key files and host
keys, and the session (connection, channel, realm and avatar).
"""
