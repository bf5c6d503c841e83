"""Suite-wide set-up: which form of the compiled modules the tests exercise.

By default the tests import the package as installed: the per-message
modules compiled by setup.py where that worked. A compiled module built from
other source than its current one would test yesterday's code, so the run
stops and says so.
With AKTO_PURE_PYTHON=1 the tests import the plain-Python sources instead,
so both forms are checked (``make test`` runs the unit tests both ways).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys

import pytest

PURE = os.environ.get("AKTO_PURE_PYTHON", "") not in ("", "0")


class _SourceOnly(importlib.abc.MetaPathFinder):
    """Finds akto_collector's modules as .py files even where a compiled one sits beside them."""

    def find_spec(self, name, path=None, target=None):
        if not name.startswith("akto_collector.") or not path:
            return None
        source = os.path.join(path[0], name.rpartition(".")[2] + ".py")
        if os.path.exists(source):
            return importlib.util.spec_from_file_location(name, source)
        return None


if PURE:
    if any(name.startswith("akto_collector.") for name in sys.modules):
        raise RuntimeError("AKTO_PURE_PYTHON: akto_collector was imported before tests/conftest.py")
    sys.meta_path.insert(0, _SourceOnly())


def pytest_configure(config):
    from akto_collector.compiled import module_status

    status = module_status()
    stale = sorted(name for name, state in status.items() if state == "stale")
    if stale:
        raise pytest.UsageError(
            f"compiled modules built from other source than theirs: {', '.join(stale)}; rebuild with `make setup`"
        )
    if PURE and set(status.values()) != {"interpreted"}:
        raise pytest.UsageError(f"AKTO_PURE_PYTHON=1 but compiled modules were imported: {status}")


def pytest_report_header(config):
    from akto_collector.compiled import summary

    return f"akto_collector core: {summary()}"


@pytest.fixture(autouse=True)
def _bcc_headers_unchanged():
    """A test whose code points bcc at headers in this process (BCC_KERNEL_SOURCE,
    kernel/headers.use_kernel_headers) must not leave it set: every collector
    a later test starts would inherit the test's tree and fail to compile."""
    before = os.environ.get("BCC_KERNEL_SOURCE")
    yield
    if before is None:
        os.environ.pop("BCC_KERNEL_SOURCE", None)
    else:
        os.environ["BCC_KERNEL_SOURCE"] = before
