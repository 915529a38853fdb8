"""
The SSH crypto policies: which algorithms the server offers, and which host
and user keys it accepts, under C{--crypto-policy modern} (the default),
C{fips}, C{compat} or C{legacy} (L{POLICIES}), narrowed with OpenSSH's list
syntax (L{CryptoPolicy.narrowed}).

Under C{modern}, the lists follow what OpenSSH's hardening guidance and
ssh-audit's policies ask: no SHA-1, no CBC, no finite-field or NIST key
exchange; no policy offers compression (Conch's C{zlib} is offered before
authentication and inflates without bound).  The AEAD ciphers, the
encrypt-then-MAC MACs and strict key exchange, which Conch lacks, come from
L{twisted_s3sftp.ssh.ciphers} and L{twisted_s3sftp.ssh.packets}; the
finite-field exchanges from L{twisted_s3sftp.ssh.kex}.

This module is pure: it names algorithms and judges keys by their type
and size, and imports nothing from Twisted's reactor or boto3.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from attrs import evolve, field, frozen

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


#: Key exchanges with NIST curves (FIPS 140-3 approved).
NIST_KEY_EXCHANGES = (b"ecdh-sha2-nistp256", b"ecdh-sha2-nistp384", b"ecdh-sha2-nistp521")

#: ECDSA signature algorithms, host or user.
ECDSA_ALGORITHMS = (b"ecdsa-sha2-nistp256", b"ecdsa-sha2-nistp384", b"ecdsa-sha2-nistp521")

#: RSA signatures with SHA-2.
RSA_SHA2_ALGORITHMS = (b"rsa-sha2-512", b"rsa-sha2-256")

#: Finite-field exchanges on RFC 3526's groups with SHA-2 (RFC 8268), from
#: L{twisted_s3sftp.ssh.kex}: FIPS 140-3 approved.
MODP_KEY_EXCHANGES = (
    b"diffie-hellman-group16-sha512",
    b"diffie-hellman-group18-sha512",
    b"diffie-hellman-group14-sha256",
)

#: Group exchange with SHA-256 (RFC 4419), on the same groups.
GROUP_EXCHANGE = b"diffie-hellman-group-exchange-sha256"


def _names(values: Iterable[bytes]) -> tuple[bytes, ...]:
    """
    @return: algorithm names as a tuple (a typed attrs converter).
    """
    return tuple(values)


def _kinds(values: Iterable[str]) -> frozenset[str]:
    """
    @return: key types as a frozen set (a typed attrs converter).
    """
    return frozenset(values)


#: Host key types (C{Key.type()}) as messages name them, in that order.
_HOST_KEY_NAMES = {
    "Ed25519": "ed25519",
    "EC": "ECDSA",
    "RSA": f"RSA of {MIN_RSA_HOST_BITS} bits or more",
}


@frozen
class CryptoPolicy:
    """
    One crypto policy: what the server offers, best first, and which keys
    it accepts.

    @ivar name: its name for C{--crypto-policy}.
    @ivar keyExchanges: key exchange algorithms.
    @ivar ciphers: ciphers.
    @ivar macs: MACs.
    @ivar hostKeyAlgorithms: signature algorithms host keys are offered with.
    @ivar userSignatures: signature algorithms accepted from users.
    @ivar hostKeyTypes: C{Key.type()} names of usable host keys.
    @ivar userKeyTypes: C{Key.type()} names of accepted user keys.
    """

    name: str
    keyExchanges: tuple[bytes, ...] = field(converter=_names)
    ciphers: tuple[bytes, ...] = field(converter=_names)
    macs: tuple[bytes, ...] = field(converter=_names)
    hostKeyAlgorithms: tuple[bytes, ...] = field(converter=_names)
    userSignatures: tuple[bytes, ...] = field(converter=_names)
    hostKeyTypes: frozenset[str] = field(converter=_kinds)
    userKeyTypes: frozenset[str] = field(converter=_kinds)
    compressions: tuple[bytes, ...] = COMPRESSIONS

    def hostKeyProblem(self, keyType: str, bits: int) -> str | None:
        """
        Judge a host key against the policy.

        @param keyType: C{"Ed25519"}, C{"RSA"}, C{"EC"}, C{"DSA"}...
        @param bits: its size.
        @return: why it cannot be used, or L{None} if it can.
        """
        if keyType not in self.hostKeyTypes:
            allowed = " or ".join(
                _HOST_KEY_NAMES[kind] for kind in _HOST_KEY_NAMES if kind in self.hostKeyTypes
            )
            name = _HOST_KEY_NAMES.get(keyType, keyType).split(" ")[0]
            return (
                f"{name} host keys are not offered under --crypto-policy {self.name}"
                f" (use {allowed})"
            )
        if keyType == "RSA" and bits < MIN_RSA_HOST_BITS:
            return f"an RSA host key needs at least {MIN_RSA_HOST_BITS} bits, this one has {bits}"
        return None

    def userKeyProblem(self, keyType: str, bits: int) -> str | None:
        """
        Judge a user's public key against the policy.

        @param keyType: C{"Ed25519"}, C{"RSA"}, C{"EC"}, C{"DSA"}...
        @param bits: its size.
        @return: why it is refused, or L{None} if it is accepted.
        """
        if keyType not in self.userKeyTypes:
            return f"{keyType} keys are not accepted"
        if keyType == "RSA" and bits < MIN_RSA_USER_BITS:
            return f"RSA keys need at least {MIN_RSA_USER_BITS} bits, this one has {bits}"
        return None

    def signatureAccepted(self, algorithm: bytes) -> bool:
        """
        @param algorithm: the signature algorithm a user authenticates with.
        @return: whether the policy accepts it.
        """
        return algorithm in self.userSignatures

    def narrowed(
        self,
        keyExchanges: str | None = None,
        ciphers: str | None = None,
        macs: str | None = None,
        hostKeyAlgorithms: str | None = None,
    ) -> CryptoPolicy:
        """
        Narrow the policy, with OpenSSH's list syntax: C{a,b} offers those
        (in that order), C{-a,b} offers the policy's list without them,
        C{^a,b} puts them first.  Nothing outside the policy can be added,
        and patterns are refused rather than guessed at.

        @return: the narrowed policy.
        @raise ValueError: naming the option and the names it allows.
        """
        changes: dict[str, Any] = {}
        for option, attribute, value in (
            ("--kex-algorithms", "keyExchanges", keyExchanges),
            ("--ciphers", "ciphers", ciphers),
            ("--macs", "macs", macs),
            ("--host-key-algorithms", "hostKeyAlgorithms", hostKeyAlgorithms),
        ):
            if value is not None:
                allowed: tuple[bytes, ...] = getattr(self, attribute)
                changes[attribute] = _narrow(option, self.name, allowed, value)
        return evolve(self, **changes)


def _narrow(option: str, policy: str, allowed: tuple[bytes, ...], value: str) -> tuple[bytes, ...]:
    """
    Apply one OpenSSH-style list to C{allowed}: C{a,b} replaces it,
    C{-a,b} removes those, C{^a,b} moves them to the front, and C{+a,b}
    (which cannot add what the policy lacks) leaves it as it is.
    """
    value = value.strip()
    prefix = value[:1] if value[:1] in ("-", "^", "+") else ""
    try:
        names = [
            name.strip().encode("ascii") for name in value[len(prefix) :].split(",") if name.strip()
        ]
    except UnicodeEncodeError:
        raise ValueError(f"{option}: algorithm names are ASCII") from None
    if any(b"*" in name or b"?" in name for name in names):
        raise ValueError(f"{option}: patterns are not supported; name the algorithms")
    unknown = [name.decode() for name in names if name not in allowed]
    if unknown:
        raise ValueError(
            f"{option}: {', '.join(unknown)} not allowed under --crypto-policy {policy};"
            f" allowed: {', '.join(a.decode() for a in allowed)}"
        )
    ordered = tuple(dict.fromkeys(names))
    if prefix == "-":
        result = tuple(a for a in allowed if a not in names)
    elif prefix == "^":
        result = ordered + tuple(a for a in allowed if a not in names)
    elif prefix == "+":
        result = allowed
    else:
        result = ordered
    if not result:
        raise ValueError(f"{option}: nothing would be left to offer")
    return result


def sha1Algorithms(policy: CryptoPolicy) -> list[str]:
    """
    @return: the SHA-1 algorithms C{policy} offers or accepts, for the
        warning C{legacy} logs at start.
    """
    offered = policy.keyExchanges + policy.macs + policy.hostKeyAlgorithms + policy.userSignatures
    sha1 = (b"diffie-hellman-group14-sha1", b"hmac-sha1", b"ssh-rsa")
    return sorted({a.decode() for a in offered if a in sha1})


#: The default: no SHA-1, no NIST curves, AEAD and encrypt-then-MAC first.
MODERN = CryptoPolicy(
    "modern",
    KEY_EXCHANGES,
    CIPHERS,
    MACS,
    HOST_KEY_ALGORITHMS,
    USER_SIGNATURE_ALGORITHMS,
    {"Ed25519", "RSA"},
    USER_KEY_TYPES,
)

#: FIPS 140-3 approved algorithms only: NIST curves, AES, HMAC-SHA-2, ECDSA
#: and RSA.  It selects algorithms; it does not make this process a
#: validated cryptographic module.
FIPS = CryptoPolicy(
    "fips",
    NIST_KEY_EXCHANGES + MODP_KEY_EXCHANGES,
    tuple(c for c in CIPHERS if not c.startswith(b"chacha20")),
    MACS,
    ECDSA_ALGORITHMS + RSA_SHA2_ALGORITHMS,
    ECDSA_ALGORITHMS + RSA_SHA2_ALGORITHMS,
    {"EC", "RSA"},
    {"EC", "RSA"},
)

#: C{modern}, and the NIST curves, the finite-field groups and group
#: exchange for clients without X25519 or ed25519 (Java 8, FIPS-mode
#: systems, JSch 0.1.55 with an ECDSA host key).
COMPAT = evolve(
    MODERN,
    name="compat",
    keyExchanges=KEY_EXCHANGES
    + NIST_KEY_EXCHANGES
    + (b"diffie-hellman-group14-sha256",)
    + MODP_KEY_EXCHANGES[:2]
    + (GROUP_EXCHANGE,),
    hostKeyAlgorithms=HOST_KEY_ALGORITHMS[:1] + ECDSA_ALGORITHMS + HOST_KEY_ALGORITHMS[1:],
    hostKeyTypes={"Ed25519", "EC", "RSA"},
)

#: C{compat}, and SHA-1 for clients that know nothing newer: the group 14
#: exchange with SHA-1, C{hmac-sha1}, and C{ssh-rsa} signatures from hosts
#: and users.  The server warns at start when it is chosen.
LEGACY = evolve(
    COMPAT,
    name="legacy",
    keyExchanges=COMPAT.keyExchanges + (b"diffie-hellman-group14-sha1",),
    macs=MACS + (b"hmac-sha1",),
    hostKeyAlgorithms=COMPAT.hostKeyAlgorithms + (b"ssh-rsa",),
    userSignatures=USER_SIGNATURE_ALGORITHMS + (b"ssh-rsa",),
)

#: The policies by name.
POLICIES = {policy.name: policy for policy in (MODERN, FIPS, COMPAT, LEGACY)}
