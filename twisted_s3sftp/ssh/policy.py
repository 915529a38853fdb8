"""
The SSH crypto policy: which algorithms the server offers, and which host
and user keys it accepts.

The lists follow what OpenSSH's hardening guidance and ssh-audit's
policies ask: no SHA-1, no CBC, no finite-field or NIST key exchange, no
compression (Conch's C{zlib} is offered before authentication and inflates
without bound).  The AEAD ciphers, the encrypt-then-MAC MACs and strict key
exchange, which Conch lacks, come from L{twisted_s3sftp.ssh.ciphers} and
L{twisted_s3sftp.ssh.packets}.

This module is pure: it names algorithms and judges keys by their type
and size, and imports nothing from Twisted's reactor or boto3.
"""

from __future__ import annotations

#: Key exchange, best first: the post-quantum hybrid, then curve25519 for
#: clients older than OpenSSH 9.9.
KEY_EXCHANGES = (
    b"mlkem768x25519-sha256",
    b"curve25519-sha256",
    b"curve25519-sha256@libssh.org",
)

#: Ciphers, best first: the AEAD ones (L{twisted_s3sftp.ssh.ciphers}),
#: then AES-CTR.  ChaCha20-Poly1305 is offered because strict key exchange
#: is (Terrapin); a client without strict key exchange that picks it is as
#: exposed as it would be against OpenSSH's own server.
CIPHERS = (
    b"chacha20-poly1305@openssh.com",
    b"aes256-gcm@openssh.com",
    b"aes128-gcm@openssh.com",
    b"aes256-ctr",
    b"aes192-ctr",
    b"aes128-ctr",
)

#: MACs, best first: encrypt-then-MAC, then encrypt-and-MAC.  An AEAD
#: cipher needs none.
MACS = (
    b"hmac-sha2-512-etm@openssh.com",
    b"hmac-sha2-256-etm@openssh.com",
    b"hmac-sha2-512",
    b"hmac-sha2-256",
)

#: Compression: none.
COMPRESSIONS = (b"none",)

#: Signature algorithms a host key may be offered with, best first.
HOST_KEY_ALGORITHMS = (b"ssh-ed25519", b"rsa-sha2-512", b"rsa-sha2-256")

#: Signature algorithms accepted from users (RFC 8308 C{server-sig-algs}):
#: never C{ssh-rsa} (SHA-1) or C{ssh-dss}.
USER_SIGNATURE_ALGORITHMS = (
    b"ssh-ed25519",
    b"ecdsa-sha2-nistp256",
    b"ecdsa-sha2-nistp384",
    b"ecdsa-sha2-nistp521",
    b"rsa-sha2-512",
    b"rsa-sha2-256",
)

#: The smallest RSA host key offered, in bits.
MIN_RSA_HOST_BITS = 3072

#: The smallest RSA user key accepted, in bits.
MIN_RSA_USER_BITS = 2048

#: User key types accepted (C{Key.type()} names).
USER_KEY_TYPES = ("Ed25519", "EC", "RSA")


def hostKeyProblem(keyType: str, bits: int) -> str | None:
    """
    Judge a host key against the policy.

    @param keyType: C{"Ed25519"}, C{"RSA"}, C{"EC"}, C{"DSA"}...
    @param bits: its size.
    @return: why it cannot be used, or L{None} if it can.
    """
    if keyType == "Ed25519":
        return None
    if keyType == "RSA":
        if bits < MIN_RSA_HOST_BITS:
            return f"an RSA host key needs at least {MIN_RSA_HOST_BITS} bits, this one has {bits}"
        return None
    return (
        f"{keyType} host keys are not offered"
        f" (use ed25519, or RSA of {MIN_RSA_HOST_BITS} bits or more)"
    )


def userKeyProblem(keyType: str, bits: int) -> str | None:
    """
    Judge a user's public key against the policy.

    @param keyType: C{"Ed25519"}, C{"RSA"}, C{"EC"}, C{"DSA"}...
    @param bits: its size.
    @return: why it is refused, or L{None} if it is accepted.
    """
    if keyType not in USER_KEY_TYPES:
        return f"{keyType} keys are not accepted"
    if keyType == "RSA" and bits < MIN_RSA_USER_BITS:
        return f"RSA keys need at least {MIN_RSA_USER_BITS} bits, this one has {bits}"
    return None


def signatureAccepted(algorithm: bytes) -> bool:
    """
    @param algorithm: the signature algorithm a user authenticates with.
    @return: whether the policy accepts it.
    """
    return algorithm in USER_SIGNATURE_ALGORITHMS
