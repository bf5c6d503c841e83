"""ELF analysis for the process scanner: what one file is, as far as TLS capture goes.

A library or executable is read once (through an mmap) and its verdict cached
by the scanner per file identity: which of the wanted symbols it defines and
at which addresses, whether it is BoringSSL, the OpenSSL version text, whether
it is a statically linked OpenSSL with stripped symbols, whether it is a Go
program using crypto/tls. Symbol lookups go through the string table, not a
walk of every symbol (node's 75 000 .dynsym entries take ~1.6 s to iterate
with pyelftools). Pure: reads files, no /proc, no logging.
"""

from __future__ import annotations

import mmap
import re
import struct
from dataclasses import dataclass
from typing import Iterable

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from akto_collector.tlslibs import BORINGSSL_MARKERS, OPENSSL, usable

# OPENSSL_VERSION_TEXT as compiled into libcrypto or a static executable:
# "OpenSSL 3.0.19 27 Jan 2026", "OpenSSL 1.1.1w+quic  11 Sep 2023", and
# BoringSSL's "OpenSSL 1.1.1 (compatible; BoringSSL)".
_OPENSSL_TEXT_RE = re.compile(
    rb"OpenSSL (\d+\.\d+\.\d+[a-z]?)(?:[+-][\w.]+)?"
    rb"(?: +\d{1,2} [A-Z][a-z]{2} \d{4}|( \(compatible; BoringSSL\)))"
)

# Section names only Go's linker writes (.gopclntab is folded into
# .data.rel.ro in PIE builds; .go.buildinfo is always there since Go 1.13).
_GO_SECTIONS = frozenset({".go.buildinfo", ".gopclntab", ".note.go.buildid"})
_GO_TLS_MARKER = b"crypto/tls.(*Conn)"



@dataclass(frozen=True, slots=True)
class ElfInfo:
    """What one ELF file is, as far as TLS capture goes (cached per file)."""

    symbols: dict[str, int]  # wanted symbols the file defines -> address
    boringssl: bool = False
    openssl_version: str = ""  # from OPENSSL_VERSION_TEXT, when searched for and found
    stripped_static: bool = False  # OpenSSL text present, SSL symbols absent
    go: bool = False
    go_tls: bool = False
    error: str = ""




def _find_symbols(
    elf: ELFFile, mm: mmap.mmap, symsec, names: Iterable[str]
) -> tuple[dict[str, int], set[str]]:
    """Look names up in one symbol table without decoding every entry.

    Iterating node's 75 000 .dynsym entries with pyelftools takes ~1.6 s.
    Instead: find where each name sits in the string table, then find
    symbol entries whose st_name (the first field of Elf32_Sym and
    Elf64_Sym) holds that offset, and decode only those. Returns
    (defined functions -> st_value, names present but undefined).
    """
    defined: dict[str, int] = {}
    undefined: set[str] = set()
    if symsec is None or not symsec["sh_entsize"] or symsec["sh_type"] == "SHT_NOBITS":
        return defined, undefined
    strsec = elf.get_section(symsec["sh_link"])
    s0 = strsec["sh_offset"]
    s1 = s0 + strsec["sh_size"]
    t0 = symsec["sh_offset"]
    t1 = t0 + symsec["sh_size"]
    ent = symsec["sh_entsize"]
    fmt = "<I" if elf.little_endian else ">I"
    for name in names:
        pattern = name.encode() + b"\0"
        i = mm.find(pattern, s0, s1)
        # The linker may share a tail ("SSL_read" inside "xSSL_read"), so
        # every occurrence is a possible st_name, not only one after a NUL.
        while i != -1:
            needle = struct.pack(fmt, i - s0)
            j = mm.find(needle, t0, t1)
            while j != -1:
                if (j - t0) % ent == 0:
                    sym = symsec.get_symbol((j - t0) // ent)
                    if sym["st_shndx"] == "SHN_UNDEF":
                        undefined.add(name)
                    elif sym["st_info"]["type"] in ("STT_FUNC", "STT_GNU_IFUNC"):
                        defined.setdefault(name, sym["st_value"])
                j = mm.find(needle, j + 1, t1)
            i = mm.find(pattern, i + 1, s1)
    return defined, undefined


def _openssl_text(elf: ELFFile, mm: mmap.mmap) -> tuple[str, bool]:
    """(version, is_boringssl) from OPENSSL_VERSION_TEXT in .rodata, or ("", False)."""
    sec = elf.get_section_by_name(".rodata")
    if sec is None or sec["sh_type"] == "SHT_NOBITS":
        start, end = 0, len(mm)
    else:
        start, end = sec["sh_offset"], sec["sh_offset"] + sec["sh_size"]
    m = _OPENSSL_TEXT_RE.search(mm, start, end)
    if m is None:
        return "", False
    return m.group(1).decode(), m.group(2) is not None


def analyse_elf(path: str, names: tuple[str, ...], mode: str) -> ElfInfo:
    """Analyse one file. mode: "lib" (symbols only), "crypto" (version text
    only), "exe" (static OpenSSL, Go, stripped-static detection)."""
    try:
        with open(path, "rb") as f:
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError) as e:  # ValueError: empty file
        return ElfInfo({}, error=f"cannot read {path}: {e}")
    try:
        elf = ELFFile(mm)
        if mode == "crypto":
            version, boring = _openssl_text(elf, mm)
            return ElfInfo({}, openssl_version=version, boringssl=boring)
        dynsym = elf.get_section_by_name(".dynsym")
        symtab = elf.get_section_by_name(".symtab")
        defined, undefined = _find_symbols(elf, mm, dynsym, names)
        if not defined and symtab is not None:
            # Only when .dynsym lacks them: .symtab can be far larger.
            defined, _ = _find_symbols(elf, mm, symtab, names)
        if mode == "lib":
            boring = bool(defined) and bool(
                _find_symbols(elf, mm, dynsym, BORINGSSL_MARKERS)[0]
                or _find_symbols(elf, mm, symtab, BORINGSSL_MARKERS)[0]
            )
            return ElfInfo(defined, boringssl=boring)
        return _analyse_exe(elf, mm, dynsym, symtab, defined, undefined)
    except (ELFError, OSError, ValueError, struct.error, KeyError) as e:
        return ElfInfo({}, error=f"cannot parse ELF {path}: {e}")
    finally:
        mm.close()


def _analyse_exe(elf, mm, dynsym, symtab, defined, undefined) -> ElfInfo:
    if usable(OPENSSL, defined):
        version, boring = _openssl_text(elf, mm)
        if not boring:
            boring = bool(
                _find_symbols(elf, mm, dynsym, BORINGSSL_MARKERS)[0]
                or _find_symbols(elf, mm, symtab, BORINGSSL_MARKERS)[0]
            )
        return ElfInfo(defined, openssl_version=version, boringssl=boring)

    section_names = {s.name for s in elf.iter_sections()}
    if section_names & _GO_SECTIONS:
        pcln = elf.get_section_by_name(".gopclntab")
        if pcln is not None and pcln["sh_type"] != "SHT_NOBITS":
            start = pcln["sh_offset"]
            go_tls = mm.find(_GO_TLS_MARKER, start, start + pcln["sh_size"]) != -1
        else:
            go_tls = mm.find(_GO_TLS_MARKER) != -1
        return ElfInfo({}, go=True, go_tls=go_tls)

    imports = bool(undefined)
    dynamic = elf.get_section_by_name(".dynamic")
    if not imports and dynamic is not None and hasattr(dynamic, "iter_tags"):
        imports = any(
            t.entry.d_tag == "DT_NEEDED" and t.needed.startswith("libssl.so")
            for t in dynamic.iter_tags()
        )
    if imports or symtab is not None:
        # Dynamically linked to libssl (nginx also embeds "built with OpenSSL
        # x.y.z" text), or unstripped without SSL symbols: no static OpenSSL.
        return ElfInfo({})
    version, boring = _openssl_text(elf, mm)
    return ElfInfo({}, openssl_version=version, boringssl=boring, stripped_static=bool(version))
