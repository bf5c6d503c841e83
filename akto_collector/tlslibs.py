"""The TLS library kinds the collector probes: one table for the scanner and the loader.

Each kind names an API: the symbols the scanner looks up in an ELF file,
which of them make it usable (at least one read and one write function),
and which kernel program goes on each symbol's entry and return. The scanner
decides the kind of a file; the loader attaches the kind's probes. Pure data.
"""

from __future__ import annotations

from typing import NamedTuple


class Api(NamedTuple):
    name: str
    symbols: tuple[str, ...]  # looked up in the ELF file, in this order
    reads: tuple[str, ...]  # at least one of these ...
    writes: tuple[str, ...]  # ... and one of these make a file usable
    probes: tuple[tuple[str, str, str | None], ...]  # (symbol, entry program, return program or None)


# SSL_read_ex/SSL_write_ex exist only in OpenSSL >= 1.1.1 (CPython uses
# them). SSL_free lets the kernel forget a session whose pointer may be
# reused; SSL_do_handshake, SSL_get_fd and SSL_set_fd are looked up for the
# logs (which API a build has), not probed.
OPENSSL = Api(
    "openssl",
    symbols=("SSL_read", "SSL_write", "SSL_read_ex", "SSL_write_ex", "SSL_do_handshake", "SSL_free",
             "SSL_get_fd", "SSL_set_fd"),
    reads=("SSL_read", "SSL_read_ex"),
    writes=("SSL_write", "SSL_write_ex"),
    probes=(
        ("SSL_read", "tls_read_enter", "tls_exit_int"),
        ("SSL_write", "tls_write_enter", "tls_exit_int"),
        ("SSL_read_ex", "tls_read_ex_enter", "tls_exit_ex"),
        ("SSL_write_ex", "tls_write_ex_enter", "tls_exit_ex"),
        ("SSL_free", "tls_free_enter", None),
    ),
)
GNUTLS = Api(
    "gnutls",
    symbols=("gnutls_record_recv", "gnutls_record_send"),
    reads=("gnutls_record_recv",),
    writes=("gnutls_record_send",),
    probes=(
        ("gnutls_record_recv", "tls_read_enter", "tls_exit_ssize"),
        ("gnutls_record_send", "tls_write_enter", "tls_exit_ssize"),
    ),
)
# NSS does its TLS inside NSPR's I/O layer: PR_Read/PR_Write on an SSL file
# descriptor carry plaintext.
NSS = Api(
    "nss",
    symbols=("PR_Read", "PR_Write", "PR_Recv", "PR_Send"),
    reads=("PR_Read", "PR_Recv"),
    writes=("PR_Write", "PR_Send"),
    probes=(
        ("PR_Read", "tls_read_enter", "tls_exit_int"),
        ("PR_Recv", "tls_read_enter", "tls_exit_int"),
        ("PR_Write", "tls_write_enter", "tls_exit_int"),
        ("PR_Send", "tls_write_enter", "tls_exit_int"),
    ),
)

KIND_OPENSSL = "openssl"  # shared libssl.so* from OpenSSL
KIND_BORINGSSL = "boringssl"  # shared libssl.so* from BoringSSL
KIND_OPENSSL_STATIC = "openssl-static"  # OpenSSL linked into the executable (node)
KIND_BORINGSSL_STATIC = "boringssl-static"  # BoringSSL linked into the executable
KIND_GNUTLS = "gnutls"  # libgnutls.so*
KIND_NSS = "nss"  # libnspr4.so, in a process that also maps NSS's libssl3.so

KINDS: dict[str, Api] = {
    KIND_OPENSSL: OPENSSL,
    KIND_BORINGSSL: OPENSSL,
    KIND_OPENSSL_STATIC: OPENSSL,
    KIND_BORINGSSL_STATIC: OPENSSL,
    KIND_GNUTLS: GNUTLS,
    KIND_NSS: NSS,
}

# Defined only by BoringSSL, never by OpenSSL: tells the two apart.
BORINGSSL_MARKERS = ("SSL_CTX_set_strict_cipher_list", "SSL_CTX_set_select_certificate_cb")


def usable(api: Api, symbols) -> bool:
    """Whether a file defining ``symbols`` can be captured: one read and one write function."""
    return any(n in symbols for n in api.reads) and any(n in symbols for n in api.writes)
