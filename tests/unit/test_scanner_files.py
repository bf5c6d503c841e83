"""Libraries found on disk before any process maps them (short-lived clients)."""

import os

import pytest

from akto_collector.supervisor.scanner import ProcessScanner, system_tls_libraries


def test_system_libraries_found_without_a_process():
    paths = system_tls_libraries()
    if not paths:
        pytest.skip("no system libssl/libgnutls on this host")
    result = ProcessScanner().scan_files(paths + ["/etc/hostname", "/nonexistent/libssl.so.3"])
    kinds = {lib.kind for lib in result.libraries.values()}
    assert kinds & {"openssl", "gnutls"}
    for lib in result.libraries.values():
        assert lib.pids == set()
        assert os.path.exists(lib.path)
        if lib.kind == "openssl":
            assert {"SSL_read", "SSL_write"} <= set(lib.symbols)
