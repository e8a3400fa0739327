"""The distance between programs behind novelty before compute (arrl.driver.novelty)."""

from __future__ import annotations

import pytest

from arrl import paths, target
from arrl.driver.novelty import Index, positions

SYN = target.load("synthetic", paths.targets_dir())


def _set(source: str, **knobs) -> str:
    lines = source.splitlines()
    for name, value in knobs.items():
        lines = [f"{name} = {value}" if ln.startswith(f"{name} = ") else ln for ln in lines]
    return "\n".join(lines) + "\n"


def test_catalog_settings_are_compared_knob_by_knob():
    src = SYN.source()
    idx = Index(SYN.catalog)
    assert idx.nearest(src) is None  # nothing ran yet
    idx.add(1, src)
    assert idx.nearest(src).distance == 0.0
    one_step = idx.nearest(_set(src, DEPTH="6"))  # 4 -> 6: one step of a knob with 7 values
    assert (one_step.kind, one_step.exp_id) == ("catalog", 1) and one_step.distance == pytest.approx(1 / 6)
    far = idx.nearest(_set(src, DEPTH="12", BATCH_SIZE="128"))  # 3 of 6 steps, and 3 of 5
    assert far.distance == pytest.approx(3 / 6 + 3 / 5)
    idx.add(2, _set(src, DEPTH="12", BATCH_SIZE="128"))
    near = idx.nearest(_set(src, DEPTH="12", BATCH_SIZE="64"))
    assert (near.exp_id, near.distance) == (2, pytest.approx(1 / 5))
    # the same value written another way is the same setting
    assert positions(_set(src, LEARNING_RATE="0.001"), SYN.catalog) == positions(src, SYN.catalog)


def test_code_changes_are_compared_as_sources():
    src = SYN.source()
    idx = Index(SYN.catalog)
    idx.add(1, src)
    edited = src.replace('if __name__ == "__main__":', 'print("hello")\nif __name__ == "__main__":')
    near = idx.nearest(edited)
    assert near.kind == "source" and 0 < near.distance < 0.2  # one added line among a dozen
    other = "import math\n\n\ndef f(x):\n    return math.sqrt(x)\n"
    assert idx.nearest(other).distance > 0.9
    assert Index().nearest("x = 1\n") is None
    free = Index()
    free.add(7, "x = 1\ny = 2\n")
    assert free.nearest("x = 1\n# a comment only\ny = 2\n").distance == 0.0  # formatting is not a change
