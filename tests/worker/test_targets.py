"""The shipped targets: tiny trains for real and beats the unigram entropy; nanochat's
GPU script runs on the CPU in a smoke configuration; manifests load and validate."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from arrl import paths, target
from arrl.worker.sandbox.process import ProcessSandbox
from arrl.worker.sandbox.config import SandboxConfig

ARRL = str(Path(sys.executable).parent / "arrl")  # the console script of the venv running the tests


def _unigram_entropy(data_dir: Path) -> float:
    meta = json.loads((data_dir / "manifest.json").read_text())
    val = np.concatenate(pq.read_table(data_dir / "val" / "shard_00000.parquet").column("tokens").to_pylist())
    counts = np.bincount(val[1: meta["eval_tokens"] + 1], minlength=256).astype(float)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def test_tiny_trains_end_to_end_and_beats_the_unigram_entropy(shakespeare_dir, tmp_path):
    env = {**os.environ, "ARRL_DATA_HOME": str(shakespeare_dir.parent), "ARRL_RUNS_DIR": str(tmp_path)}
    proc = subprocess.run([ARRL, "run", "tiny"], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    fields = dict(line.split(": ", 1) for line in proc.stdout.splitlines() if ": " in line)
    assert fields["status"] == "ok"
    bpb, entropy = float(fields["val_bpb"]), _unigram_entropy(shakespeare_dir)
    assert bpb < entropy - 0.5, (bpb, entropy)
    outcome = json.loads((Path(fields["run_dir"]) / "outcome.json").read_text())
    assert outcome["val_bpb"] == pytest.approx(bpb, abs=1e-6)
    losses = [loss for _, _, loss in outcome["curve"]]
    assert len(losses) >= 5 and losses[-1] < losses[0]  # the learning curve was streamed and falls
    assert 25 <= outcome["timings"]["train_s"] < 45  # the 30 s budget was used, not overrun


def _smoke(source: str) -> str:
    """nanochat with tiny dimensions: what a CPU can train in seconds."""
    subs = {"DEPTH": "2", "MODEL_DIM": "64", "HEAD_DIM": "32", "DEVICE_BATCH": "2", "COMPILE": "False"}
    for name, value in subs.items():
        source, n = re.subn(rf"^{name} = .*$", f"{name} = {value}", source, count=1, flags=re.M)
        assert n == 1, name
    return source


def test_nanochat_runs_on_cpu_in_a_smoke_configuration(web_dir, tmp_path):
    tgt = target.load("nanochat", paths.targets_dir())
    config = SandboxConfig(budget_s=4.0, grace_s=60.0, memory_mb=8192, threads=2)
    out = ProcessSandbox(paths.env_dir(), web_dir, config).run(_smoke(tgt.source()), tmp_path / "run")
    assert out.status == "ok", out.message + "\n" + out.log_tail
    steps = int(re.search(r"^steps: (\d+)$", out.log_tail, flags=re.M).group(1))
    assert steps >= 3
    assert math.isfinite(out.val_bpb) and out.val_bpb < 8.0  # better than 8 bits per byte
    assert "tokens_per_s:" in out.log_tail


@pytest.mark.parametrize("name", ["tiny", "nanochat"])
def test_shipped_targets_have_valid_manifests(name):
    tgt = target.load(name, paths.targets_dir())
    assert tgt.program_md.is_file() and tgt.train_py.is_file()
    names = {k.name for k in tgt.catalog}
    assert len(names) >= 8
    for knob in tgt.catalog:
        assert re.search(rf"^{knob.name} = {re.escape(knob.current)}\b", tgt.source(), flags=re.M)


def _target(tmp_path, toml: str, train: str = "A = 1\nB = 'x'\n# begin\nC = 2\n# end\n") -> Path:
    d = tmp_path / "t"
    d.mkdir(exist_ok=True)
    (d / "target.toml").write_text(toml)
    (d / "train.py").write_text(train)
    return d


def test_target_regions_and_catalog(tmp_path):
    d = _target(tmp_path, 'profile = "shakespeare"\n[[editable]]\nbegin = "# begin"\nend = "# end"\n'
                          '[catalog.A]\nvalues = ["1", "2"]\n')
    tgt = target.load(d, tmp_path)
    assert tgt.editable[0].first_line == 4 and tgt.editable[0].last_line == 4
    assert tgt.catalog[0] == target.Knob("A", ("1", "2"), "1")
    assert tgt.budget_s == 30.0  # the profile's default
    assert tgt.prompt_code is False


def test_knob_meaning_from_the_manifest_or_the_assignments_comment(tmp_path):
    d = _target(tmp_path, 'profile = "shakespeare"\nprompt_code = true\n[catalog.A]\nvalues = ["1", "2"]\n'
                          '[catalog.B]\nvalues = ["\'x\'", "\'y\'"]\nmeaning = "which letter"\n'
                          '[catalog.C]\nvalues = ["2", "3"]\n',
                train="A = 1  # blocks in the model\nB = 'x'  # ignored: the manifest says\nC = 2\n")
    tgt = target.load(d, tmp_path)
    assert [k.meaning for k in tgt.catalog] == ["blocks in the model", "which letter", ""]
    assert tgt.prompt_code is True


@pytest.mark.parametrize("toml, message", [
    ('profile = "shakespeare"\nbudget = 3\n', "unknown field 'budget'"),
    ('budget_s = 3\n', "missing required field 'profile'"),
    ('profile = "moon"\n', "unknown profile 'moon'"),
    ('profile = "shakespeare"\nbudget_s = "fast"\n', "field 'budget_s' has the wrong type"),
    ('profile = "shakespeare"\nbudget_s = -1\n', "must be positive"),
    ('profile = "shakespeare"\n[catalog.Z]\nvalues = ["1"]\n', "no top-level assignment Z"),
    ('profile = "shakespeare"\n[catalog.A]\nvalues = ["2", "3"]\n', "must include the current value 1"),
    ('profile = "shakespeare"\n[catalog.A]\nvalues = [1, 2]\n', "non-empty list of strings"),
    ('profile = "shakespeare"\n[catalog.A]\nvalues = ["1", "import os"]\n', "is not a Python literal"),
    ('profile = "shakespeare"\n[[editable]]\nbegin = "# nope"\nend = "# end"\n', "markers '# nope'"),
    ('profile = [', "target.toml"),
    ('profile = "shakespeare"\n[catalog.A]\nvalues = ["1"]\nhelp = "x"\n', "may have meaning, optimum or basins, nothing else"),
    ('profile = "shakespeare"\n[catalog.A]\nvalues = ["1", "2"]\nbasins = ["1"]\n', "basins must list two or more"),
    ('profile = "shakespeare"\n[catalog.A]\nvalues = ["1", "2"]\nbasins = ["1", "9"]\n', "basins must list two or more"),
    ('profile = "shakespeare"\n[catalog.A]\nvalues = ["1", "2"]\nbasins = ["1", "2"]\noptimum = "2"\n',
     "optimum and basins are two landscapes"),
    ('profile = "shakespeare"\n[catalog.A]\nvalues = ["1", "2"]\nbasins = ["1", "2"]\n[catalog.C]\nvalues = ["2"]\n',
     "every knob needs basins, and the same number of them (found A: 2, C: 0)"),
    ('profile = "shakespeare"\n[catalog.A]\nvalues = ["1"]\nmeaning = 3\n', "catalog.A.meaning must be one line"),
    ('profile = "shakespeare"\nprompt_code = 1\n', "field 'prompt_code' has the wrong type"),
    ('profile = "shakespeare"\nbudget_s = true\n', "field 'budget_s' has the wrong type"),
])
def test_bad_target_manifests_name_the_problem(tmp_path, toml, message):
    with pytest.raises(target.TargetError, match=re.escape(message)):
        target.load(_target(tmp_path, toml), tmp_path)


def test_unknown_target_lists_the_known_ones():
    with pytest.raises(target.TargetError, match="unknown target 'nope' \\(known: nanochat, synthetic, synthetic-basins, tiny\\)"):
        target.load("nope", paths.targets_dir())


def test_synthetic_basins_traps_edits_of_one_or_two_knobs():
    """The landscape where greedy search fails (issue 24): three basins 0.02 apart; train.py starts in the
    second best; from each basin's centre no edit of one or two knobs (the loop's catalog edits) improves, so
    a loop that only keeps improvements stays where it lands."""
    import itertools

    from arrl.worker.sandbox import simulated

    tgt = target.load("synthetic-basins", paths.targets_dir())
    cat = tgt.catalog
    centres = [[k.values.index(k.basins[b]) for k in cat] for b in range(3)]
    assert [simulated.value_at(c, cat) for c in centres] == pytest.approx([1.0, 1.02, 1.04])
    start = [k.values.index(k.current) for k in cat]
    assert simulated.basin(start, cat) == 1 and [simulated.optimum(k) for k in cat] == centres[0]
    assert simulated.value(tgt.source(), cat) == pytest.approx(simulated.value_at(start, cat))
    for b, centre in enumerate(centres):
        floor = simulated.value_at(centre, cat)
        for i, j in itertools.combinations_with_replacement(range(len(cat)), 2):
            for vi, vj in itertools.product(range(len(cat[i].values)), range(len(cat[j].values))):
                x = list(centre)
                x[i], x[j] = vi, vj
                assert simulated.value_at(x, cat) >= floor - 1e-12, (b, cat[i].name, cat[j].name)
    assert target.load("synthetic", paths.targets_dir()).catalog[0].basins == ()  # one bowl, as before
    from arrl.cli.bench import _simulated

    assert _simulated("synthetic-basins")  # `arrl bench research --target synthetic-basins` simulates it
