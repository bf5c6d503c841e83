"""Build: compiles the per-message modules with Cython where it can.

The modules below stay plain Python (that is what is read, reviewed and
tested); Cython turns them into C extension modules at install time, about
25% less CPU per captured pair (bench/bench_core.py). The ``.pxd`` files next
to some of them make their per-message classes extension types. Without
Cython or a C compiler, or with AKTO_PURE_PYTHON=1 at install time, the
package installs as plain Python and works the same, only slower;
``akto-collector doctor`` and the ``ready`` log line say which form runs.
"""

import glob
import json
import os
import shutil
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from akto_collector.compiled import MODULES, STAMPS, source_hash, source_path  # noqa: E402 (stdlib only)

PACKAGE = os.path.join(HERE, "akto_collector")
COMPILED = [os.path.relpath(source_path(PACKAGE, name), HERE) for name in MODULES]
PROBES = os.path.join(HERE, "probes")


class BuildPyWithProbes(build_py):
    """Ships the kernel programs' sources (the top-level probes/) inside the
    package, at akto_collector/kernel/probes/, where kernel.loader looks first.

    In a checkout (or an editable install) the loader reads probes/ itself;
    only a built copy (a wheel, ``pip install .``, the image) needs them moved in.
    """

    def run(self):
        super().run()
        target = os.path.join(self.build_lib, "akto_collector", "kernel", "probes")
        os.makedirs(target, exist_ok=True)
        for path in sorted(glob.glob(os.path.join(PROBES, "*.[ch]"))):
            shutil.copy2(path, target)


class OptionalBuildExt(build_ext):
    """A compile failure leaves the pure-Python package, with a warning."""

    def run(self):
        try:
            super().run()
        except Exception as exc:  # no compiler, no Python headers
            _warn(f"compiling the core failed ({exc}); installing it as plain Python")

    def copy_file(self, infile, outfile, *args, **kwargs):
        # Replace the module file, never rewrite it in place: a running
        # collector has the old one mapped, and truncating it under a process
        # crashes that process. A new inode leaves the old mapping intact.
        if str(outfile).endswith(".so") and os.path.exists(outfile):
            os.unlink(outfile)
        return super().copy_file(infile, outfile, *args, **kwargs)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:
            _warn(f"compiling {ext.name} failed ({exc}); it stays plain Python")
            if self.inplace:  # an older build of it must not pass for this one
                old = self.get_ext_fullpath(ext.name)
                if os.path.exists(old):
                    os.unlink(old)


def _warn(text):
    print(f"akto-collector setup: {text}", file=sys.stderr)


def extensions():
    if os.environ.get("AKTO_PURE_PYTHON", "") not in ("", "0"):
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        _warn("Cython is not installed; the core stays plain Python")
        return []
    # The source each module is compiled from, for compiled.module_status();
    # written before the build so that a wheel carries it (package data).
    stamps = {name: source_hash(PACKAGE, name) for name in MODULES}
    with open(os.path.join(PACKAGE, STAMPS), "w", encoding="utf-8") as fh:
        json.dump(stamps, fh, indent=1, sort_keys=True)
    return cythonize(
        COMPILED,
        quiet=True,
        compiler_directives={
            "language_level": 3,
            # Annotations are documentation here, not C types: the compiled
            # module must accept exactly what the Python one accepts.
            "annotation_typing": False,
        },
    )


setup(
    ext_modules=extensions(),
    cmdclass={"build_ext": OptionalBuildExt, "build_py": BuildPyWithProbes},
    # Cython's C output is build output, not package data.
    exclude_package_data={"": ["*.c"]},
)
