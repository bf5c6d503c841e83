"""Build: compiles the per-message modules with Cython where it can.

The modules below stay plain Python (that is what is read, reviewed and
tested); Cython turns them into C extension modules at install time, about
25% less CPU per captured pair (bench/bench_core.py). The ``.pxd`` files next
to some of them make their per-message classes extension types. Without
Cython or a C compiler, or with AKTO_PURE_PYTHON=1 at install time, the
package installs as plain Python and works the same, only slower;
``akto-collector doctor`` and the ``ready`` log line say which form runs.
"""

import json
import os
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from akto_collector.compiled import MODULES, STAMPS, source_hash  # noqa: E402 (stdlib only)

PACKAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "akto_collector")
COMPILED = [f"akto_collector/{name}.py" for name in MODULES]


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
    cmdclass={"build_ext": OptionalBuildExt},
    # Cython's C output is build output, not package data (probes/*.c is).
    exclude_package_data={"akto_collector": [f"{name}.c" for name in MODULES]},
)
