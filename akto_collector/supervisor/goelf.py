"""Go executables: where to put uprobes on crypto/tls, and how to read the fd.

Go has no libssl: crypto/tls is compiled into the executable. The kernel side
puts plain uprobes on the entry of ``crypto/tls.(*Conn).Read`` and
``crypto/tls.(*Conn).Write`` and on every RET instruction of both (uretprobes
crash Go programs, whose goroutine stacks move), and reads the socket fd from
the ``*tls.Conn`` receiver. This module tells it where and how, from the file
alone: pure analysis of one path (reads it through an mmap; no /proc, no
logging, no bcc, no cache: the scanner caches per file identity).

``analyse_go(path)`` returns:

* ``None`` when the file is not a Go executable at all (not ELF, or an ELF
  file with neither Go's sections nor its build-info header): nothing to say
  about it, as for any C program;
* ``GoRefusal(reason)`` when it is (or may be) Go but cannot be captured
  safely, with the exact reason for the ``tls_not_capturable`` log line;
* ``GoTls`` otherwise.

Safety: a wrong uprobe offset corrupts the user's program, so every step is
checked and any doubt refuses the binary:

* amd64 only, Go 1.17 or later (register ABI), version from ``.go.buildinfo``
  (both the Go 1.18+ inline-string form and the older pointer form);
* functions from ``.symtab`` when present, else from the pclntab that every
  Go binary keeps, found by section name (``.gopclntab``;
  ``.data.rel.ro.gopclntab`` in older PIE builds) or by its magic header when
  an external linker merged the sections. Formats: Go 1.16/1.17 (magic
  0xfffffffa, absolute PCs) and Go 1.18+ (0xfffffff0, 0xfffffff1: PCs as
  offsets from the text start). The header is validated (pads 0, quantum 1,
  pointer size 8, offsets ordered and in range, function table sorted and
  in range, entries agreeing with the function records, names readable),
  and the magic must match the build-info version. When both a symbol table
  and a valid pclntab are there they must agree on the entries;
* the text start of Go 1.18+ offsets is not ``.text``'s address (an
  external linker puts the C start-up code first) and not the pclntab
  header's field (unrelocated in PIE builds, no longer written since Go
  1.2x): it is ``runtime.firstmoduledata.text``, the module record that
  points at this pclntab, found by those pointers and checked against its
  own minpc/maxpc; Go 1.18/1.19's header field is the fallback and must
  agree when both exist;
* each function must start with the register-ABI stack check (``cmp ...,
  [r14+0x10]``: g lives in R14), which also confirms the entry is right;
* its body is disassembled (capstone) from the entry to the next function's
  entry in one linear sweep, every instruction following the previous one
  exactly; any decode failure or no RET refuses the binary. RET vaddrs are
  instruction starts the disassembler confirmed, never 0xC3 bytes inside
  other instructions or in the INT3 padding between functions;
* the fd chain's struct offsets come from DWARF when the binary has it,
  else from the known layout of the version (``tlslibs.GO_FD_LAYOUTS``).

All addresses are virtual addresses as in the ELF file (what bcc's
``attach_uprobe(name=path, addr=A)`` takes, also for PIE files).
"""

from __future__ import annotations

import mmap
import re
from typing import NamedTuple

from elftools.elf.elffile import ELFFile

from akto_collector.tlslibs import GO_FD_LAYOUTS, GoFdLayout
from akto_collector.supervisor.goimage import (
    BUILDINFO_MAGIC,
    GO_SECTIONS,
    Image,
    Refuse,
    build_version,
    find_pclntab,
    refuse,
    symbols,
    text_start,
    uvarint,
)

READ = "crypto/tls.(*Conn).Read"
WRITE = "crypto/tls.(*Conn).Write"
MIN_GO = (1, 17)  # register ABI on amd64

_VERSION_RE = re.compile(r"go(\d+)\.(\d+)(?:\.\d+)?")
_GOARCH = {
    "EM_AARCH64": "arm64", "EM_386": "386", "EM_ARM": "arm", "EM_PPC64": "ppc64",
    "EM_S390": "s390x", "EM_RISCV": "riscv64", "EM_MIPS": "mips", "EM_LOONGARCH": "loong64",
}


class GoFunction(NamedTuple):
    """One probed function: entry and end vaddrs ([entry, end), end being the
    next function's entry) and the vaddr of every RET instruction in it."""

    name: str
    entry: int
    end: int
    rets: tuple[int, ...]


class GoTls(NamedTuple):
    """A Go executable whose crypto/tls can be captured."""

    version: str  # runtime.Version() as in .go.buildinfo: "go1.27.3"
    stripped: bool  # no .symtab
    pie: bool  # ET_DYN
    how_found: str  # "symtab" or "pclntab"
    functions: tuple[GoFunction, GoFunction]  # (Read, Write)
    fd_layout: GoFdLayout
    fd_layout_source: str  # "dwarf", or "known layout of go1.X"

    @property
    def read(self) -> GoFunction:
        return self.functions[0]

    @property
    def write(self) -> GoFunction:
        return self.functions[1]


class GoRefusal(NamedTuple):
    """A Go executable (or what may be one) that cannot be captured, and why."""

    reason: str
    version: str = ""  # when it was read





def analyse_go(path: str) -> GoTls | GoRefusal | None:
    """Analyse one file; see the module docstring for what each result means."""
    try:
        with open(path, "rb") as f:
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except ValueError:  # empty file: not an executable
        return None
    except OSError as e:
        return GoRefusal(f"cannot read {path}: {e.strerror or e}")
    version = ""
    try:
        if mm[:4] != b"\x7fELF":
            return None
        img = Image(mm)
        if not (img.sections.keys() & GO_SECTIONS) and mm.find(BUILDINFO_MAGIC) == -1:
            return None
        return _analyse(img)
    except Refuse as r:
        return GoRefusal(str(r), getattr(r, "version", version))
    except Exception as e:  # noqa: BLE001 - a damaged file must refuse, never crash the scanner
        return GoRefusal(f"cannot parse ELF {path}: {type(e).__name__}: {e}")
    finally:
        mm.close()




def _analyse(img: Image) -> GoTls:
    elf = img.elf
    machine = elf["e_machine"]
    if machine != "EM_X86_64" or elf.elfclass != 64 or not elf.little_endian:
        arch = _GOARCH.get(machine, str(machine))
        raise refuse(f"{arch}: only amd64 is supported")

    version = build_version(img)
    m = _VERSION_RE.search(version)
    if m is None:
        raise refuse(f"unrecognised Go version {version!r} in .go.buildinfo", version)
    major, minor = int(m.group(1)), int(m.group(2))
    go_minor = f"go{major}.{minor}"
    if (major, minor) < MIN_GO:
        raise refuse(f"{go_minor}: older than Go 1.17 (no register ABI)", version)
    if major != 1:
        raise refuse(f"{go_minor}: unknown Go major version", version)

    symtab = img.sections.get(".symtab")
    stripped = symtab is None or symtab["sh_type"] != "SHT_SYMTAB"
    syms = {} if stripped else symbols(img, symtab, (READ, WRITE))

    try:
        pcln = find_pclntab(img, minor)
        pcln_error = ""
    except Refuse as r:
        pcln, pcln_error = None, str(r)

    bounds: dict[str, tuple[int, int]] = {}
    if pcln is not None:
        text = text_start(img, pcln) if pcln.relative else 0
        if not pcln.uses(b"crypto/tls.") and not syms:
            raise refuse("does not use crypto/tls", version)
        for name in (READ, WRITE):
            i = pcln.find(name.encode())
            if i is None:
                raise refuse(f"{name} not found in the pclntab", version)
            entry, end = text + pcln.entries[i], text + pcln.entries[i + 1]
            if name in syms and syms[name][0] != entry:
                raise refuse(
                    f"{name}: .symtab says 0x{syms[name][0]:x}, the pclntab 0x{entry:x}", version
                )
            bounds[name] = (entry, end)
    elif len(syms) == 2:
        # No usable pclntab, but the symbol table names both (with sizes).
        for name, (value, size) in syms.items():
            if size <= 0:
                raise refuse(f"{name} has no size in .symtab and {pcln_error}", version)
            bounds[name] = (value, value + size)
    else:
        raise refuse(pcln_error, version)
    how_found = "symtab" if len(syms) == 2 else "pclntab"

    functions = tuple(_disassemble(img, name, *bounds[name], version) for name in (READ, WRITE))
    layout, source = _fd_layout(img, minor, version)
    return GoTls(
        version=version,
        stripped=stripped,
        pie=img.pie,
        how_found=how_found,
        functions=functions,
        fd_layout=layout,
        fd_layout_source=source,
    )



# --- disassembly -------------------------------------------------------------

_disassembler = None


def _cs():
    global _disassembler
    if _disassembler is None:
        import capstone

        md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
        md.detail = False
        md.skipdata = False
        _disassembler = md
    return _disassembler


def _disassemble(img: Image, name: str, entry: int, end: int, version: str) -> GoFunction:
    """RET vaddrs of [entry, end), from one linear sweep that must cover it exactly."""
    if not entry < end or end - entry > 1 << 20:
        raise refuse(f"{name}: implausible bounds 0x{entry:x}-0x{end:x}", version)
    if not img.executable(entry, end):
        raise refuse(f"{name} at 0x{entry:x}-0x{end:x} is not in an executable segment", version)
    off = img.offset(entry, end - entry)
    code = bytes(img.mm[off : off + (end - entry)])
    try:
        md = _cs()
    except ImportError:
        raise refuse("capstone is not installed (pip install capstone)", version) from None
    rets: list[int] = []
    pc = entry
    prologue_ok = False
    for n, (address, size, mnemonic, op_str) in enumerate(md.disasm_lite(code, entry)):
        if address != pc:
            break
        if n < 4 and mnemonic == "cmp" and "[r14 + 0x10]" in op_str:
            prologue_ok = True
        if n == 3 and not prologue_ok:
            raise refuse(
                f"{name} at 0x{entry:x}: no register-ABI stack check (cmp with [r14 + 0x10]) in its prologue",
                version,
            )
        if mnemonic.rsplit(" ", 1)[-1] == "ret":
            rets.append(address)
        pc = address + size
    if pc != end:
        bad = code[pc - entry : pc - entry + 8].hex(" ")
        raise refuse(
            f"disassembly of {name} failed at 0x{pc:x}: cannot decode {bad or 'past the end'}"
            f" (function 0x{entry:x}-0x{end:x})",
            version,
        )
    if not prologue_ok:
        raise refuse(f"{name} at 0x{entry:x}: no register-ABI stack check in its prologue", version)
    if not rets:
        raise refuse(f"no RET found in {name} (0x{entry:x}-0x{end:x})", version)
    return GoFunction(name, entry, end, tuple(rets))


# --- fd layout ---------------------------------------------------------------


def known_layout(minor: int) -> GoFdLayout | None:
    """The fd chain's offsets known for go1.MINOR, or None."""
    for (lo, hi), layout in GO_FD_LAYOUTS:
        if lo <= minor <= hi:
            return layout
    return None


def _fd_layout(img: Image, minor: int, version: str) -> tuple[GoFdLayout, str]:
    if ".debug_info" in img.sections or ".zdebug_info" in img.sections:
        try:
            layout = dwarf_layout(img.elf)
        except Exception:  # noqa: BLE001 - damaged DWARF: fall back to the known layout
            layout = None
        if layout is not None:
            return layout, "dwarf"
    layout = known_layout(minor)
    if layout is None:
        lo, hi = GO_FD_LAYOUTS[0][0][0], GO_FD_LAYOUTS[-1][0][1]
        raise refuse(
            f"go1.{minor}: fd layout not confirmed (no usable DWARF; the known layout holds for go1.{lo}-go1.{hi})",
            version,
        )
    return layout, f"known layout of go1.{minor}"


def dwarf_layout(elf: ELFFile) -> GoFdLayout | None:
    """The fd chain's offsets from the binary's DWARF, or None when a type or
    member is missing. Finds the five struct DIEs by their names in
    .debug_info (Go writes names inline) instead of decoding every DIE."""
    dw = elf.get_dwarf_info(relocate_dwarf_sections=False)
    if dw.debug_info_sec is None:
        return None
    data = dw.debug_info_sec.stream.getvalue()

    def members(type_name: str) -> dict[str, int] | None:
        pattern = type_name.encode() + b"\0"
        i = data.find(pattern)
        while i != -1:
            code = data[i - 1] if i > 0 else 0
            if 0 < code < 0x80:  # a one-byte abbreviation code, then DW_AT_name
                try:
                    die = dw.get_DIE_from_refaddr(i - 1)
                    name = die.attributes.get("DW_AT_name")
                    if die.tag == "DW_TAG_structure_type" and name is not None and name.value == pattern[:-1]:
                        return {
                            c.attributes["DW_AT_name"].value.decode(): _member_offset(c)
                            for c in die.iter_children()
                            if c.tag == "DW_TAG_member" and "DW_AT_name" in c.attributes
                        }
                except Exception:  # noqa: BLE001 - not a DIE start after all
                    pass
            i = data.find(pattern, i + 1)
        return None

    tls_conn = members("crypto/tls.Conn")
    iface = members("runtime.iface")
    tcpconn = members("net.TCPConn")
    conn = members("net.conn")
    netfd = members("net.netFD")
    pfd = members("internal/poll.FD")
    try:
        return GoFdLayout(
            conn=tls_conn["conn"],
            iface_data=iface["data"],
            tcpconn_fd=tcpconn["conn"] + conn["fd"],
            netfd_pfd=netfd["pfd"],
            pfd_sysfd=pfd["Sysfd"],
        )
    except (TypeError, KeyError):
        return None


def _member_offset(die) -> int:
    attr = die.attributes.get("DW_AT_data_member_location")
    if attr is None:
        return 0
    value = attr.value
    if isinstance(value, int):
        return value
    # A location expression: DW_OP_plus_uconst ULEB128 (older Go).
    if value and value[0] == 0x23:
        n, _ = uvarint(bytes(value), 1, len(value))
        if n >= 0:
            return n
    raise ValueError(f"member location {value!r}")

