"""The compiled form of the core (setup.py, *.pxd) stays true to the Python source."""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import pytest

from akto_collector import compiled

PKG = Path(__file__).resolve().parents[2] / "akto_collector"


def _pxd_classes(path: Path) -> dict[str, tuple[set[str], set[str]]]:
    """class -> (declared fields, cpdef methods) of an augmenting .pxd."""
    out: dict[str, tuple[set[str], set[str]]] = {}
    current = None
    for line in path.read_text().splitlines():
        m = re.match(r"cdef class (\w+)", line)
        if m:
            current = out.setdefault(m[1], (set(), set()))
            continue
        m = re.match(r"\s+cdef (?:public )?(?:const )?[\w ]+?(?:\[:\])? (\w+(?:, \w+)*)$", line)
        if m and current is not None:
            current[0].update(f.strip() for f in m[1].split(","))
        m = re.match(r"\s+cpdef (\w+)\(", line)
        if m and current is not None:
            current[1].add(m[1])
    return out


def _source_classes(path: Path) -> dict[str, tuple[set[str], set[str]]]:
    """class -> (__slots__, methods) as written in the .py source."""
    out = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ClassDef):
            slots: set[str] = set()
            methods = set()
            for item in node.body:
                if isinstance(item, ast.Assign) and any(getattr(t, "id", "") == "__slots__" for t in item.targets):
                    slots = set(ast.literal_eval(item.value))
                elif isinstance(item, ast.FunctionDef):
                    methods.add(item.name)
            out[node.name] = (slots, methods)
    return out


def _module_name(path: Path) -> str:
    """akto_collector/protocols/http1.cpython-311-x86_64-linux-gnu.so -> "protocols.http1"."""
    rel = path.relative_to(PKG)
    return ".".join(rel.parts[:-1] + (rel.name.split(".")[0],))


PXDS = sorted(PKG.rglob("*.pxd"))


@pytest.mark.parametrize("pxd", PXDS, ids=[_module_name(p) for p in PXDS])
def test_pxd_declares_exactly_the_slots(pxd):
    # A slot added in the .py but not in the .pxd would be an AttributeError
    # only in the compiled form.
    assert _module_name(pxd) in compiled.MODULES
    source = _source_classes(pxd.with_suffix(".py"))
    for name, (fields, cpdefs) in _pxd_classes(pxd).items():
        assert name in source, f"{pxd.name}: {name} is not a class of {pxd.stem}.py"
        slots, methods = source[name]
        assert fields == slots, f"{pxd.name}: {name} fields differ from __slots__"
        assert cpdefs <= methods, f"{pxd.name}: cpdef of methods {name} does not have"


def test_every_compiled_file_is_a_listed_module_and_the_build_is_whole():
    # A compiled file whose module moved or left the list would shadow or
    # outlive its source; a list entry that does not compile runs slower
    # without anyone noticing. (Where no compiler is there, nothing is compiled.)
    built = {_module_name(so) for so in PKG.rglob("*.so")}
    assert built <= set(compiled.MODULES), built - set(compiled.MODULES)
    for name in compiled.MODULES:
        assert Path(compiled.source_path(str(PKG), name)).exists(), name
    if built and os.environ.get("AKTO_PURE_PYTHON", "") in ("", "0"):
        assert built == set(compiled.MODULES), set(compiled.MODULES) - built


def test_summary_names_what_is_not_compiled():
    assert compiled.summary({"a": "compiled", "b": "compiled"}) == "compiled"
    assert compiled.summary({"a": "interpreted"}) == "interpreted"
    assert compiled.summary({"a": "compiled", "b": "stale", "c": "interpreted"}) == (
        "mixed (stale: b, interpreted: c)"
    )


def test_source_hash_covers_the_py_and_the_pxd(tmp_path):
    (tmp_path / "m.py").write_text("x = 1\n")
    plain = compiled.source_hash(str(tmp_path), "m")
    (tmp_path / "m.pxd").write_text("cdef class C:\n    pass\n")
    with_pxd = compiled.source_hash(str(tmp_path), "m")
    (tmp_path / "m.py").write_text("x = 2\n")
    assert len({plain, with_pxd, compiled.source_hash(str(tmp_path), "m")}) == 3
