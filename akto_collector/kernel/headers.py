"""Finding what bcc needs on the host: kernel headers and a mounted tracefs.

The collector never writes into the host's ``/lib/modules`` (in a pod it is
a read-only mount, and a node's tree is not ours to change). When the running
kernel has no headers there, bcc is pointed at the nearest readable ones, in
this process only: ``BCC_KERNEL_SOURCE`` names the tree bcc compiles in, and
for Debian-style split packages (``-common`` holds the sources, ``-amd64`` the
generated files) the build half is added as include paths. bcc's own kheaders
fallback (``/sys/kernel/kheaders.tar.xz``, CONFIG_IKHEADERS) is what is left
when no tree is found.
"""

from __future__ import annotations

import os
import platform
import re
from dataclasses import dataclass
from pathlib import Path

from akto_collector.kernel.errors import ProbeError

MODULES = Path("/lib/modules")
# Where headers may be found: the host's (mounted at /usr/src in a pod, since
# the build links under /lib/modules are absolute), then the image's own,
# kept apart so that the host's mount does not hide them.
HEADER_ROOTS = (Path("/usr/src"), Path("/opt/akto-collector/kernel-headers"))
KHEADERS = Path("/sys/kernel/kheaders.tar.xz")
_KCONFIG = Path("include/linux/kconfig.h")
_AUTOCONF = Path("include/generated/autoconf.h")


@dataclass(frozen=True)
class Headers:
    """Where bcc will find headers. ``kind``: exact (the running kernel's,
    bcc finds them itself), nearest (another version's, pointed at), kheaders
    (the kernel's own archive) or none."""

    kind: str
    release: str
    source: Path | None = None  # the tree with include/linux/kconfig.h
    build: Path | None = None   # the tree with include/generated (may be source)

    def environ(self) -> dict[str, str]:
        return {"BCC_KERNEL_SOURCE": str(self.source)} if self.kind == "nearest" else {}

    def cflags(self) -> list[str]:
        """Include paths for the generated half of a split tree (searched after
        the source tree's, which has no such files)."""
        if self.kind != "nearest" or self.build == self.source:
            return []
        b = self.build
        return [f"-I{b}/arch/x86/include/generated", f"-I{b}/arch/x86/include/generated/uapi",
                f"-I{b}/include", f"-I{b}/include/generated/uapi"]

    def describe(self) -> str:
        if self.kind == "exact":
            return f"{MODULES / self.release / 'build'}"
        if self.kind == "nearest":
            return f"{self.source}" + (f" + {self.build}" if self.build != self.source else "") + \
                f" (nearest to {self.release}; none of its own)"
        if self.kind == "kheaders":
            return f"{KHEADERS} (the kernel's own, CONFIG_IKHEADERS)"
        return f"none for {self.release}"


def find_kernel_headers(release: str | None = None, modules: Path = MODULES,
                        roots: tuple[Path, ...] = HEADER_ROOTS, kheaders: Path = KHEADERS) -> Headers:
    """The headers bcc should use for ``release`` (the running kernel's by default)."""
    release = release or platform.release()
    own = modules / release
    if (own / "build" / _AUTOCONF).exists() and ((own / "source" / _KCONFIG).exists()
                                                 or (own / "build" / _KCONFIG).exists()):
        return Headers("exact", release, own / "source" if (own / "source").exists() else own / "build",
                       own / "build")
    trees = []
    for root in roots:
        try:
            trees.extend(p for p in root.iterdir() if p.name.startswith("linux-headers-"))
        except OSError:
            continue
    builds = [p for p in trees if (p / _AUTOCONF).exists()]
    pairs = [(src, b) for b in builds if (src := _source_of(b)) is not None]
    if pairs:
        src, build = min(pairs, key=lambda pair: _distance(pair[1].name, release))
        return Headers("nearest", release, src, build)
    if kheaders.exists():
        return Headers("kheaders", release)
    return Headers("none", release)


def use_kernel_headers(found: Headers) -> list[str]:
    """Point bcc at ``found`` in this process; returns the extra cflags.
    ProbeError when there is nothing to compile against."""
    if found.kind == "none":
        raise ProbeError(
            f"no kernel headers for {found.release}: none in {MODULES / found.release}, none under "
            f"{', '.join(map(str, HEADER_ROOTS))}, no {KHEADERS}; install linux-headers-amd64 "
            "(make setup does) or mount the host's /usr/src and /lib/modules")
    os.environ.update(found.environ())
    return found.cflags()


def _source_of(build: Path) -> Path | None:
    """The source half of a build tree: itself when whole; Debian names the
    other half in its Makefile (``include .../linux-headers-X-common/Makefile``)."""
    if (build / _KCONFIG).exists():
        return build
    try:
        text = (build / "Makefile").read_text(errors="replace")
    except OSError:
        text = ""
    m = re.search(r"^include\s+(\S+)/Makefile\s*$", text, re.M)
    candidates = [Path(m.group(1))] if m else []
    # The Makefile's path is the host's; the same name next to the build tree
    # is where it is when the tree was mounted or copied elsewhere.
    candidates += [build.parent / c.name for c in candidates]
    candidates.append(build.parent / (build.name.rsplit("-", 1)[0] + "-common"))
    return next((c for c in candidates if (c / _KCONFIG).exists()), None)


def _version(name: str) -> tuple[int, ...]:
    nums = []
    for part in re.split(r"[.-]", name.removeprefix("linux-headers-")):
        if not part.isdigit():
            break
        nums.append(int(part))
    return tuple(nums)


def _distance(name: str, release: str) -> tuple:
    """Nearest major version first, then the newest of those: the kernel's
    ABI for the few structs the programs name moves least within a major."""
    have, want = _version(name), _version(release)
    if not have or not want:
        return (99, ())
    return (abs(have[0] - want[0]), tuple(-x for x in have))


TRACEFS = Path("/sys/kernel/tracing")
SOCK_TRACEPOINTS = ("sock/sock_recv_length", "sock/sock_send_length")  # Linux 6.3+


def has_sock_tracepoints(tracefs: Path = TRACEFS) -> bool:
    return all((tracefs / "events" / tp).is_dir() for tp in SOCK_TRACEPOINTS)


def use_sock_tracepoints(setting: str, tracefs: Path = TRACEFS) -> bool:
    """Whether the data path is the sock tracepoints' (AKTO_SOCK_TRACEPOINTS:
    auto, on or off). ProbeError when required and missing."""
    have = has_sock_tracepoints(tracefs)
    if setting == "on" and not have:
        raise ProbeError("AKTO_SOCK_TRACEPOINTS=on but this kernel has no sock:sock_{send,recv}_length "
                         "tracepoints (Linux 6.3+); set it to auto to use the syscall path")
    return have and setting != "off"


def ensure_tracefs() -> None:
    if not Path("/sys/kernel/tracing/events").exists():
        rc = os.system("mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null")
        if rc != 0 or not Path("/sys/kernel/tracing/events").exists():
            raise ProbeError("tracefs is not mounted at /sys/kernel/tracing and mounting it failed")
