"""The static edit policy: what an edit may not add, and the per-target allow-list."""

from __future__ import annotations

import pytest

from arrl import paths, target
from arrl.driver import guard as edit_policy

TINY = target.load("tiny", paths.targets_dir())
SRC = TINY.source()


def test_the_shipped_targets_pass_unchanged():
    for name in ("tiny", "nanochat"):
        src = target.load(name, paths.targets_dir()).source()
        assert edit_policy.check(src, src).ok


def test_an_ordinary_edit_passes():
    assert edit_policy.check(SRC, SRC.replace("N_LAYER = 4", "N_LAYER = 6")).ok


@pytest.mark.parametrize("added, reason", [
    ("import socket\n", "imports socket"),
    ("from urllib.request import urlopen\n", "imports urllib.request"),
    ("import subprocess\n", "imports subprocess"),
    ("import ctypes\n", "imports ctypes"),
    ("from env import evaluate\n", "environment's internals (env.evaluate)"),
    ("import env.manifest\n", "environment's internals (env.manifest)"),
    ("import os\nos.system('curl x')\n", "calls os.system()"),
    ("exec('print(1)')\n", "calls exec()"),
    ("open('/arrl/data/val/shard_00000.parquet', 'rb')\n", "outside the run's directory"),
    ("open('../other-run/model.pt2', 'wb')\n", "outside the run's directory"),
    ("model_io.save_model = lambda m: None\n", "assigns to model_io.save_model"),
    ("progress.Run.over_budget = lambda self: False\n", "assigns to progress.Run.over_budget"),
])
def test_risky_additions_are_rejected(added, reason):
    verdict = edit_policy.check(SRC, added + SRC)
    assert not verdict.ok and reason in verdict.reason


def test_removing_the_model_save_is_rejected():
    verdict = edit_policy.check(SRC, SRC.replace("    model_io.save_model(model)\n", "    pass\n"))
    assert not verdict.ok and "removes the call to model_io.save_model" in verdict.reason


def test_writing_inside_the_run_directory_is_fine():
    assert edit_policy.check(SRC, "open('notes.txt', 'w').write('hi')\n" + SRC).ok


def test_allow_list_per_target(make_target):
    tgt = make_target('profile = "shakespeare"\nallow = ["shutil"]\n', "x = 1\n")
    assert edit_policy.check("x = 1\n", "import shutil\nx = 1\n", tgt.allow).ok
    assert not edit_policy.check("x = 1\n", "import socket\nx = 1\n", tgt.allow).ok


def test_unparsable_edit_is_rejected_with_a_reason():
    verdict = edit_policy.check(SRC, "def (:\n")
    assert not verdict.ok and "does not parse" in verdict.reason
