"""Writes packaging/akto-collector.env, the default /etc/akto-collector/env,
from the table of variables (akto_collector/config.py ``VARIABLES``): every
variable commented out with its default, so the file documents itself and
never names a variable the collector does not know.

    python packaging/env_file.py > packaging/akto-collector.env   (make env-file)

tests/unit/test_deploy.py checks that the file is what this prints.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from akto_collector.config import VARIABLES, Computed, Positive

HEADER = """\
# akto-collector's settings: NAME=value lines, read at start and again on
# `systemctl reload akto-collector` (the unit names this file in AKTO_ENV_FILE;
# a bad value is refused and the running settings stay). Every variable is
# here, commented out, with its default: uncomment the ones you change.
# Details: docs/configuration.md. Made by `make env-file` from the table in
# akto_collector/config.py; do not edit the copy in packaging/.
"""
# The unit sets it; inside the file it names it would mean nothing.
LEFT_OUT = {"AKTO_ENV_FILE"}


def value_text(var) -> str:
    """The default as the variable is written (minutes as minutes, not the
    seconds it is stored in); empty when the default is computed or unset."""
    default = var.default
    if isinstance(default, Computed) or default in ((), "", None):
        return ""
    if isinstance(default, bool):
        return str(default).lower()
    if isinstance(var.reader, Positive):
        default = default / var.reader.scale
    if isinstance(default, float) and default.is_integer():
        default = int(default)
    return str(default)


def default_text(var) -> str:
    if var.default_doc:
        return var.default_doc.replace("`", "")
    if isinstance(var.default, Computed):
        return var.default.doc.replace("`", "")
    return value_text(var) or "unset"


def comment(text: str) -> list[str]:
    return textwrap.wrap(text, 78, initial_indent="# ", subsequent_indent="# ", break_on_hyphens=False)


def env_file() -> str:
    out = [HEADER.rstrip("\n")]
    section = None
    for var in VARIABLES:
        if var.name in LEFT_OUT:
            continue
        if var.section != section:
            section = var.section
            out += ["", f"## {section}"]
        out += ["", *comment(var.doc.replace("`", "")),
                *comment(f"Accepted: {var.reader.accepted.replace('`', '')}. Default: {default_text(var)}."),
                f"#{var.name}={value_text(var)}"]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.stdout.write(env_file())
