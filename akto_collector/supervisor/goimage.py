"""Reading a Go executable's own tables: build info, symbols, the pclntab.

The part of the Go analysis (``goelf``) that knows Go's file formats: the
ELF file read through an mmap (``Image``: sections, vaddr to file offset,
PIE relocations), the version recorded in ``.go.buildinfo`` (the Go 1.18+
inline form and the older pointers), ``.symtab`` lookups, and the pclntab
(Go 1.16/1.17's absolute entries, 1.18+'s offsets from the text start, which
is ``runtime.firstmoduledata.text``). Every doubt raises ``Refuse`` with the
reason; nothing here decides what may be probed.
"""

from __future__ import annotations

import bisect
import mmap
import re
import struct

from elftools.elf.elffile import ELFFile

BUILDINFO_MAGIC = b"\xff Go buildinf:"
GO_SECTIONS = frozenset({".go.buildinfo", ".gopclntab", ".data.rel.ro.gopclntab", ".note.go.buildid"})
_PCLN_SECTIONS = (".gopclntab", ".data.rel.ro.gopclntab")
# pclntab magic -> the Go versions that write it (inclusive minor bounds).
_MAGIC_116 = 0xFFFFFFFA  # Go 1.16, 1.17
_MAGIC_118 = 0xFFFFFFF0  # Go 1.18, 1.19
_MAGIC_120 = 0xFFFFFFF1  # Go 1.20 and later
_MAGIC_MINORS = {_MAGIC_116: (16, 17), _MAGIC_118: (18, 19), _MAGIC_120: (20, 10**6)}
_OLD_MAGICS = {0xFFFFFFFB: "Go 1.2-1.15", 0xFFFFFFF9: "Go 1.0-1.1"}
_MAX_FUNCS = 1 << 24
_VERSION_RE = re.compile(r"go(\d+)\.(\d+)(?:\.\d+)?")
_R_X86_64_RELATIVE = 8


class Refuse(Exception):
    """Internal: stop the analysis with this reason."""




def refuse(reason: str, version: str = "") -> Refuse:
    r = Refuse(reason)
    r.version = version
    return r




class Image:
    """An ELF file read through an mmap: sections by name, vaddr -> bytes."""

    def __init__(self, mm: mmap.mmap):
        self.mm = mm
        size = len(mm)
        if mm[4:6] == b"\x02\x01":  # ELFCLASS64, little-endian: check before pyelftools seeks
            if size < 64:
                raise refuse(f"truncated file: {size} bytes")
            shoff, = struct.unpack_from("<Q", mm, 0x28)
            shentsize, shnum = struct.unpack_from("<HH", mm, 0x3A)
            phoff, = struct.unpack_from("<Q", mm, 0x20)
            phentsize, phnum = struct.unpack_from("<HH", mm, 0x36)
            if shoff + shnum * shentsize > size or phoff + phnum * phentsize > size:
                raise refuse(f"truncated file: its headers end past its {size} bytes")
            for k in range(shnum if shentsize == 64 else 0):
                sh_type, = struct.unpack_from("<I", mm, shoff + 64 * k + 4)
                sh_offset, sh_size = struct.unpack_from("<QQ", mm, shoff + 64 * k + 0x18)
                if sh_type != 8 and sh_offset + sh_size > size:  # not SHT_NOBITS
                    raise refuse(f"truncated file: section {k} ends past its {size} bytes")
            for k in range(phnum if phentsize == 56 else 0):
                p_offset, = struct.unpack_from("<Q", mm, phoff + 56 * k + 8)
                p_filesz, = struct.unpack_from("<Q", mm, phoff + 56 * k + 0x20)
                if p_offset + p_filesz > size:
                    raise refuse(f"truncated file: segment {k} ends past its {size} bytes")
        self.elf = elf = ELFFile(mm)
        self.pie = elf["e_type"] == "ET_DYN"
        self.sections = {}
        for sec in elf.iter_sections():
            if sec["sh_type"] != "SHT_NOBITS" and sec["sh_offset"] + sec["sh_size"] > size:
                raise refuse(f"truncated file: section {sec.name} ends past its {size} bytes")
            self.sections.setdefault(sec.name, sec)
        # (vaddr, filesz, offset, memsz, executable) of each PT_LOAD segment
        self.loads = [
            (s["p_vaddr"], s["p_filesz"], s["p_offset"], s["p_memsz"], bool(s["p_flags"] & 1))
            for s in elf.iter_segments()
            if s["p_type"] == "PT_LOAD"
        ]
        self._relas = None

    def offset(self, vaddr: int, size: int) -> int:
        """File offset of [vaddr, vaddr+size), which must lie in a PT_LOAD's file bytes."""
        for va, filesz, off, _, _ in self.loads:
            if va <= vaddr and vaddr + size <= va + filesz:
                if off + (vaddr - va) + size > len(self.mm):
                    raise refuse(f"0x{vaddr:x} is past the end of the file (truncated?)")
                return off + (vaddr - va)
        raise refuse(f"0x{vaddr:x} (+{size}) is not in the file's loaded segments")

    def vaddr(self, offset: int) -> int | None:
        for va, filesz, off, _, _ in self.loads:
            if off <= offset < off + filesz:
                return va + (offset - off)
        return None

    def executable(self, start: int, end: int) -> bool:
        return any(x and va <= start and end <= va + filesz for va, filesz, _, _, x in self.loads)

    def word(self, vaddr: int) -> int:
        """The 8-byte little-endian value at vaddr as the loader leaves it:
        in a PIE file a zero there may be filled by a RELATIVE relocation."""
        value = struct.unpack_from("<Q", self.mm, self.offset(vaddr, 8))[0]
        if value == 0 and self.pie:
            value = self.relocation(vaddr) or 0
        return value

    def _rela_ranges(self) -> list[tuple[int, int]]:
        if self._relas is None:
            self._relas = [
                (s["sh_offset"], s["sh_offset"] + s["sh_size"])
                for s in self.sections.values()
                if s["sh_type"] == "SHT_RELA" and s["sh_entsize"] == 24
            ]
        return self._relas

    def relocation(self, vaddr: int) -> int | None:
        """Addend of an R_X86_64_RELATIVE relocation of the word at vaddr."""
        needle = struct.pack("<Q", vaddr)
        for start, end in self._rela_ranges():
            j = self.mm.find(needle, start, end)
            while j != -1:
                if (j - start) % 24 == 0:
                    _, info, addend = struct.unpack_from("<QQq", self.mm, j)
                    if info & 0xFFFFFFFF == _R_X86_64_RELATIVE:
                        return addend
                j = self.mm.find(needle, j + 1, end)
        return None

    def relocated_from(self, target: int) -> list[int]:
        """Vaddrs of words that a RELATIVE relocation sets to target."""
        needle = struct.pack("<q", target)
        found = []
        for start, end in self._rela_ranges():
            j = self.mm.find(needle, start, end)
            while j != -1:
                if (j - start) % 24 == 16:
                    r_offset, info = struct.unpack_from("<QQ", self.mm, j - 16)
                    if info & 0xFFFFFFFF == _R_X86_64_RELATIVE:
                        found.append(r_offset)
                j = self.mm.find(needle, j + 1, end)
        return found




# --- .go.buildinfo ----------------------------------------------------------


def build_version(img: Image) -> str:
    """runtime.Version() as recorded in .go.buildinfo (Go 1.13+)."""
    mm = img.mm
    sec = img.sections.get(".go.buildinfo")
    start = sec["sh_offset"] if sec is not None and sec["sh_type"] != "SHT_NOBITS" else -1
    if start >= 0 and mm[start : start + 14] == BUILDINFO_MAGIC:
        off, end = start, start + sec["sh_size"]
    else:
        off = mm.find(BUILDINFO_MAGIC)
        while off != -1 and off % 16:
            off = mm.find(BUILDINFO_MAGIC, off + 1)
        if off == -1:
            raise refuse("Go version not found: no .go.buildinfo (Go older than 1.13?)")
        end = min(len(mm), off + 4096)
    if end - off < 32:
        raise refuse(".go.buildinfo is truncated")
    ptrsize, flags = mm[off + 14], mm[off + 15]
    if flags & 2:  # Go 1.18+: version and module info inline, as varint-prefixed strings
        n, pos = uvarint(mm, off + 32, end)
        if n <= 0 or pos + n > end or n > 256:
            raise refuse(".go.buildinfo: bad version string length")
        raw = bytes(mm[pos : pos + n])
    else:  # Go 1.13-1.17: pointers to Go string headers (data, len)
        if ptrsize != 8 or flags & 1:
            raise refuse(f".go.buildinfo: pointer size {ptrsize}, flags {flags}: not little-endian 64-bit")
        bvaddr = img.vaddr(off)
        if bvaddr is None:
            raise refuse(".go.buildinfo is not in a loaded segment")
        strhdr = img.word(bvaddr + 16)
        data, n = img.word(strhdr), img.word(strhdr + 8)
        if not 0 < n <= 256:
            raise refuse(".go.buildinfo: bad version string length")
        start = img.offset(data, n)
        raw = bytes(mm[start : start + n])
    try:
        version = raw.decode("ascii")
    except UnicodeDecodeError:
        raise refuse(".go.buildinfo: version is not text") from None
    if not version.isprintable():
        raise refuse(".go.buildinfo: version is not text")
    return version


def uvarint(buf, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while pos < end and shift < 64:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7
    return -1, pos



# --- .symtab -----------------------------------------------------------------


def symbols(img: Image, symtab, names) -> dict[str, tuple[int, int]]:
    """{name: (st_value, st_size)} of the defined functions among names,
    found through the string table (not a walk of every symbol)."""
    mm = img.mm
    found: dict[str, tuple[int, int]] = {}
    ent = symtab["sh_entsize"]
    if ent != 24:
        return found
    strsec = img.elf.get_section(symtab["sh_link"])
    s0, s1 = strsec["sh_offset"], strsec["sh_offset"] + strsec["sh_size"]
    t0, t1 = symtab["sh_offset"], min(len(mm), symtab["sh_offset"] + symtab["sh_size"])
    for name in names:
        pattern = name.encode() + b"\0"
        i = mm.find(pattern, s0, s1)
        while i != -1 and name not in found:
            needle = struct.pack("<I", i - s0)
            j = mm.find(needle, t0, t1)
            while j != -1:
                if (j - t0) % ent == 0 and j + ent <= t1:
                    _, info, _, shndx, value, size = struct.unpack_from("<IBBHQQ", mm, j)
                    if info & 0xF == 2 and shndx != 0:  # STT_FUNC, defined
                        found[name] = (value, size)
                        break
                j = mm.find(needle, j + 1, t1)
            i = mm.find(pattern, i + 1, s1)
    return found


# --- pclntab -----------------------------------------------------------------


class Pclntab:
    """A validated pclntab: the function table and the name lookup.

    ``entries``: nfunc + 1 function starts (the last is the end of the last
    function): offsets from the text start (``relative``, Go 1.18+) or
    absolute PCs (Go 1.16/1.17).
    """

    __slots__ = ("buf", "base", "vaddr", "magic", "relative", "nfunc", "header_text",
                 "funcname", "funcs", "end", "entries", "funcoffs", "_fsize")

    def __init__(self, buf, base: int, size: int, vaddr: int):
        self.buf, self.base, self.vaddr, self.end = buf, base, vaddr, base + size
        where = f"pclntab at 0x{vaddr:x}"
        if size < 72 or base + size > len(buf):
            raise refuse(f"{where}: truncated")
        magic, pad1, pad2, quantum, ptrsize = struct.unpack_from("<IBBBB", buf, base)
        self.magic = magic
        if magic in _OLD_MAGICS:
            raise refuse(f"{where}: format of {_OLD_MAGICS[magic]} (older than Go 1.17)")
        if magic not in _MAGIC_MINORS:
            raise refuse(f"{where}: unknown magic 0x{magic:08x}")
        if pad1 or pad2 or quantum != 1 or ptrsize != 8:
            raise refuse(f"{where}: header pads {pad1},{pad2}, quantum {quantum}, pointer size {ptrsize}")
        self.relative = magic != _MAGIC_116
        if self.relative:
            nfunc, _nfiles, text, names, cu, files, pcs, funcs = struct.unpack_from("<8Q", buf, base + 8)
            hdr, fsize = 72, 4
        else:
            nfunc, _nfiles, names, cu, files, pcs, funcs = struct.unpack_from("<7Q", buf, base + 8)
            text, hdr, fsize = 0, 64, 8
        self.header_text = text
        if not 0 < nfunc < _MAX_FUNCS:
            raise refuse(f"{where}: {nfunc} functions")
        if not hdr <= names <= cu <= files <= pcs <= funcs < size:
            raise refuse(f"{where}: table offsets out of order or range")
        ftab_size = (2 * nfunc + 1) * fsize
        if funcs + ftab_size > size:
            raise refuse(f"{where}: function table past its end")
        self.nfunc, self._fsize = nfunc, fsize
        self.funcname = (base + names, base + cu)
        self.funcs = base + funcs
        ftab = struct.unpack_from(f"<{2 * nfunc + 1}{'I' if fsize == 4 else 'Q'}", buf, self.funcs)
        self.entries = ftab[0::2]
        self.funcoffs = ftab[1::2]
        e = self.entries
        if any(a > b for a, b in zip(e, e[1:])):
            raise refuse(f"{where}: function table not sorted")
        if not self.relative and (e[0] == 0 or e[-1] == 0):
            raise refuse(f"{where}: function table not relocated in the file")
        limit = size - funcs - 8 - fsize
        if min(self.funcoffs) < ftab_size or max(self.funcoffs) > limit:
            raise refuse(f"{where}: function record offsets out of range")
        for i in (0, nfunc // 2, nfunc - 1):  # spot checks: records agree, names readable
            if self._func_entry(i) != e[i]:
                raise refuse(f"{where}: function {i}'s record disagrees with the table")
            if not self._name(i):
                raise refuse(f"{where}: function {i}'s name is not readable")

    def _func_entry(self, i: int) -> int:
        return struct.unpack_from("<I" if self._fsize == 4 else "<Q", self.buf, self.funcs + self.funcoffs[i])[0]

    def _name(self, i: int) -> bytes:
        nameoff = struct.unpack_from("<i", self.buf, self.funcs + self.funcoffs[i] + self._fsize)[0]
        n0, n1 = self.funcname
        if not 0 <= nameoff < n1 - n0:
            return b""
        z = self.buf.find(b"\0", n0 + nameoff, min(n1, n0 + nameoff + 4096))
        name = bytes(self.buf[n0 + nameoff : z]) if z != -1 else b""
        # Go names are UTF-8 and may hold spaces ("go.shape.struct { ... }"):
        # readable means no control characters.
        return name if name and all(c >= 32 and c != 127 for c in name) else b""

    def uses(self, prefix: bytes) -> bool:
        n0, n1 = self.funcname
        i = self.buf.find(prefix, n0, n1)
        return i != -1

    def find(self, name: bytes) -> int | None:
        """Index of the function named exactly name, or None."""
        n0, n1 = self.funcname
        buf, fsize = self.buf, self._fsize
        pos = buf.find(name + b"\0", n0, n1)
        while pos != -1:
            if pos == n0 or buf[pos - 1] == 0:
                needle = struct.pack("<i", pos - n0)
                j = buf.find(needle, self.funcs, self.end)
                while j != -1:
                    rec = j - fsize  # the record's entry field comes just before nameoff
                    entry = struct.unpack_from("<I" if fsize == 4 else "<Q", buf, rec)[0]
                    i = bisect.bisect_left(self.entries, entry, 0, self.nfunc)
                    if (
                        i < self.nfunc
                        and self.entries[i] == entry
                        and self.funcs + self.funcoffs[i] == rec
                        and self.entries[i + 1] > entry
                    ):
                        return i
                    j = buf.find(needle, j + 1, self.end)
            pos = buf.find(name + b"\0", pos + 1, n1)
        return None


def find_pclntab(img: Image, minor: int) -> Pclntab:
    """The pclntab by section name, else by its magic header in the loaded data."""
    mm = img.mm
    for name in _PCLN_SECTIONS:
        sec = img.sections.get(name)
        if sec is not None and sec["sh_type"] != "SHT_NOBITS" and sec["sh_size"]:
            pcln = Pclntab(mm, sec["sh_offset"], sec["sh_size"], sec["sh_addr"])
            _check_magic(pcln, minor)
            return pcln
    errors: list[str] = []
    wanted = [m for m, (lo, hi) in _MAGIC_MINORS.items() if lo <= minor <= hi]
    for magic in wanted:
        pattern = struct.pack("<I", magic) + b"\0\0\x01\x08"
        for va, filesz, off, _, _ in img.loads:
            end = min(len(mm), off + filesz)
            pos = mm.find(pattern, off, end)
            while pos != -1:
                vaddr = va + (pos - off)
                if vaddr % 8 == 0:
                    try:
                        return Pclntab(mm, pos, end - pos, vaddr)
                    except Refuse as r:
                        errors.append(str(r))
                pos = mm.find(pattern, pos + 1, end)
    raise refuse("pclntab not found" + (f" ({errors[0]})" if errors else ""))


def _check_magic(pcln: Pclntab, minor: int) -> None:
    lo, hi = _MAGIC_MINORS[pcln.magic]
    if not lo <= minor <= hi:
        raise refuse(f"pclntab magic 0x{pcln.magic:08x} is not that of go1.{minor}")


def text_start(img: Image, pcln: Pclntab) -> int:
    """What Go 1.18+ function offsets are relative to: runtime.firstmoduledata.text.

    moduledata (Go 1.16 through 1.27 at least) starts with pcHeader, then the
    slices funcnametab, cutab, filetab, pctab, pclntable, ftab (3 words
    each), findfunctab, minpc, maxpc, text, etext: words 0, 1, 13, 16, 17
    point into and describe this pclntab, words 20-22 are minpc, maxpc, text.
    """
    first = pcln.entries[0]
    last = pcln.entries[-1]
    names_ptr = pcln.vaddr + (pcln.funcname[0] - pcln.base)
    funcs_ptr = pcln.vaddr + (pcln.funcs - pcln.base)

    def check(md: int) -> int | None:
        try:
            w = [img.word(md + 8 * k) for k in range(24)]
        except Refuse:
            return None
        if w[0] != pcln.vaddr or w[1] != names_ptr or w[13] != funcs_ptr or w[16] != funcs_ptr:
            return None
        if w[17] != pcln.nfunc + 1:
            return None
        text = w[22]
        if w[20] != text + first or w[21] != text + last:
            return None
        return text

    texts: set[int] = set()
    needle = struct.pack("<QQ", pcln.vaddr, names_ptr)
    for va, filesz, off, _, x in img.loads:
        if x:
            continue
        end = min(len(img.mm), off + filesz)
        pos = img.mm.find(needle, off, end)
        while pos != -1:
            text = check(va + (pos - off))
            if text is not None:
                texts.add(text)
            pos = img.mm.find(needle, pos + 1, end)
    if not texts and img.pie:  # pointers only in RELATIVE relocations
        for md in img.relocated_from(pcln.vaddr):
            text = check(md)
            if text is not None:
                texts.add(text)
    header = pcln.header_text
    if img.pie and header and img.relocation(pcln.vaddr + 24) not in (None, header):
        header = img.relocation(pcln.vaddr + 24)
    if len(texts) > 1:
        raise refuse("two module records disagree on the text start")
    if texts:
        text = texts.pop()
        if header and header != text:
            raise refuse(f"text start: pclntab header 0x{header:x}, module record 0x{text:x}")
    elif header:
        text = header
    else:
        raise refuse(f"text start not found: no module record points at the pclntab at 0x{pcln.vaddr:x}")
    if not img.executable(text + first, text + last):
        raise refuse(f"functions 0x{text + first:x}-0x{text + last:x} are not in executable segments")
    return text


