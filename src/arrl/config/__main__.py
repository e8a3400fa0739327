"""`python -m arrl.config` writes docs/CONFIG.md; `--check` exits non-zero where it is out of date."""

import sys
from pathlib import Path

from arrl.config.reference import reference

out = Path(__file__).resolve().parents[3] / "docs" / "CONFIG.md"
if sys.argv[1:] == ["--check"]:
    sys.exit(0 if out.read_text() == reference() else f"{out} is out of date: run `python -m arrl.config`")
out.write_text(reference())
print(out)
