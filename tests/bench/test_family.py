"""The family of simulated targets: members share the fixed knobs' optima, the others follow the brief's facts."""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pytest

from arrl import paths, target
from arrl.bench import family
from arrl.policy.prompt import PolicyState, build
from arrl.worker.sandbox import simulated


def test_members_are_reproducible_and_differ_between_families():
    assert family.members(3, 5) == family.members(3, 5)
    assert [m.optimum for m in family.members(3, 5)] != [m.optimum for m in family.members(4, 5)]
    names = [m.name for m in family.members(3, 5)]
    assert len(set(names)) == 5


def test_fixed_knobs_share_their_optimum_and_varying_ones_follow_the_features():
    ms = family.members(0, 300)
    names = [k.name for k in family.catalog()]
    opt = np.array([m.optimum for m in ms])
    for knob, pos in family.FIXED.items():
        assert set(opt[:, names.index(knob)]) == {pos}, knob
    scale = np.array([m.scale for m in ms])
    data = np.array([m.data for m in ms])
    corr = lambda knob, x: float(np.corrcoef(opt[:, names.index(knob)], x)[0, 1])  # noqa: E731
    assert corr("DEPTH", scale) > 0.8 and corr("WIDTH", scale) > 0.8
    assert corr("LEARNING_RATE", scale) < -0.8
    assert corr("BATCH_SIZE", data) > 0.8
    assert corr("DROPOUT", data - scale) < -0.6  # 4 positions: the jitter's rounding weighs more (seed 0: -0.72)
    # the jitter the brief does not tell: members with the same facts still differ somewhere
    assert len({m.optimum for m in ms}) > 100
    assert all(0 <= p < len(k.values) for m in ms for p, k in zip(m.optimum, family.catalog()))


def test_each_member_is_a_bowl_with_its_own_minimum():
    m = family.members(1, 1)[0]
    assert m.value(m.optimum) == 1.0
    start = family.start()
    assert m.value(start) > 1.0
    other = list(m.optimum)
    other[0] = (other[0] + 1) % len(family.catalog()[0].values)
    assert m.value(other) > 1.0


def test_the_brief_gives_the_facts_in_words_and_never_an_optimum():
    for m in family.members(2, 20):
        text = m.brief()
        assert text.startswith(f"# Research brief: {m.name}")
        assert re.search(r"about [0-9.]+ (thousand|million|billion) parameters", text), text
        assert re.search(r"about [0-9.]+ (thousand|million|billion) tokens", text), text
        for knob in family.catalog():
            assert knob.name not in text
    small = min(family.members(2, 50), key=lambda m: m.scale)
    large = max(family.members(2, 50), key=lambda m: m.scale)
    assert "The model is small" in small.brief() and "The model is large" in large.brief()
    assert family.in_words(3.04e7) == "30 million" and family.in_words(1.5e9) == "1.5 billion"


def test_written_members_are_targets_whose_simulated_minimum_is_their_own(tmp_path):
    from arrl.cli.bench import _simulated

    info = family.write(2, 6, 2, tmp_path / "fam")
    assert info == family.write(2, 6, 2, tmp_path / "again")  # deterministic
    assert len(info["train"]) == 4 and len(info["held_out"]) == 2 and not set(info["train"]) & set(info["held_out"])
    assert json.loads((tmp_path / "fam" / "family.json").read_text()) == info
    ms = {m.name: m for m in family.members(2, 6)}
    for name in info["held_out"]:
        m = ms[name]
        tgt = target.load(tmp_path / "fam" / name, paths.targets_dir())
        assert [simulated.optimum(k) for k in tgt.catalog] == list(m.optimum)
        at_optimum = family.base().source()
        for k, p in zip(tgt.catalog, m.optimum):
            at_optimum = at_optimum.replace(f"\n{k.name} = {k.current}\n", f"\n{k.name} = {k.values[p]}\n")
        assert simulated.value(at_optimum, tgt.catalog) == pytest.approx(1.0)  # its own minimum, not the synthetic's
        assert simulated.value(tgt.source(), tgt.catalog) == pytest.approx(m.value(family.start()))
        assert tgt.program_md.read_text() == m.brief()
        # the policy sees the brief and the knobs, never where the minimum is: its prompt is the synthetic target's
        # but for the brief, whatever the optimum
        state = PolicyState(target=tgt.name, program=m.brief(), source=tgt.source(), fmt="catalog",
                            catalog=tgt.catalog)
        plain = tuple(target.Knob(k.name, k.values, k.current, k.meaning) for k in tgt.catalog)
        assert build(state, 8000, seed=1) == build(dataclasses.replace(state, catalog=plain), 8000, seed=1)
        assert "optimum" not in (tmp_path / "fam" / name / "train.py").read_text().lower()
    with pytest.raises(ValueError, match="not empty"):
        family.write(2, 6, 2, tmp_path / "fam")
    with pytest.raises(ValueError, match="--held-out 6"):
        family.write(2, 6, 6, tmp_path / "other")
    # `arrl bench research --target MEMBER` runs members in the simulated sandbox, as it does the synthetic target
    assert _simulated(str(tmp_path / "fam" / info["train"][0])) and _simulated("synthetic") and not _simulated("tiny")


def test_a_bad_optimum_is_refused_naming_the_field(tmp_path):
    family.write(0, 2, 1, tmp_path / "fam")
    d = tmp_path / "fam" / "family-0-00"
    toml = d / "target.toml"
    toml.write_text(toml.read_text().replace('optimum = "', 'optimum = "x', 1))
    with pytest.raises(target.TargetError, match=r"catalog\.DEPTH\.optimum must be one of its values"):
        target.load(d, paths.targets_dir())


def test_arrl_bench_family_writes_the_members_and_refuses_a_bad_split(tmp_path):
    import subprocess
    import sys

    run = lambda *a: subprocess.run([sys.executable, "-m", "arrl", "bench", "family", *a], capture_output=True,  # noqa: E731
                                    text=True, timeout=120)
    r = run(str(tmp_path / "fam"), "--seed", "1", "--members", "5", "--held-out", "2")
    assert r.returncode == 0, r.stderr
    assert "3 training members, 2 held out" in r.stdout
    assert sorted(p.name for p in (tmp_path / "fam").iterdir()) == sorted(
        [m.name for m in family.members(1, 5)] + ["family.json"])
    r = run(str(tmp_path / "other"), "--members", "5", "--held-out", "5")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "--held-out 5" in r.stderr
    assert not (tmp_path / "other").exists()
