"""Finding what bcc needs on the host: kernel headers and a mounted tracefs."""

from __future__ import annotations

import os
import platform
from pathlib import Path

from akto_collector.kernel.errors import ProbeError


def ensure_kernel_headers() -> str | None:
    """Make bcc find kernel headers. Returns a note when it fell back to
    other headers than the running kernel's, None when none was needed."""
    release = platform.release()
    build = Path("/lib/modules") / release / "build"
    if (build / "include").exists():
        return None
    candidates = sorted(Path("/usr/src").glob("linux-headers-*"))
    arch = [c for c in candidates if not c.name.endswith("-common") and (c / "include").exists()]
    if not arch:
        raise ProbeError(
            f"no kernel headers for {release} in /lib/modules nor in /usr/src; "
            "install linux-headers-amd64 (make setup does)")
    chosen = _nearest(arch, release)
    common = Path(str(chosen).rsplit("-", 1)[0] + "-common")
    build.parent.mkdir(parents=True, exist_ok=True)
    for link, target in ((build, chosen), (build.parent / "source", common if common.exists() else chosen)):
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target)
    return f"kernel headers for {release} missing: using {chosen.name}"


def _nearest(paths: list[Path], release: str) -> Path:
    def version(name: str) -> tuple[int, ...]:
        nums = []
        for part in name.replace("linux-headers-", "").replace("-", ".").split("."):
            if not part.isdigit():
                break
            nums.append(int(part))
        return tuple(nums)

    want = version(release)
    return min(paths, key=lambda p: (abs(version(p.name)[:1][0] - want[0]) if version(p.name) else 99,
                                     tuple(-x for x in version(p.name))))


def ensure_tracefs() -> None:
    if not Path("/sys/kernel/tracing/events").exists():
        rc = os.system("mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null")
        if rc != 0 or not Path("/sys/kernel/tracing/events").exists():
            raise ProbeError("tracefs is not mounted at /sys/kernel/tracing and mounting it failed")
