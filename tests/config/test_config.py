"""The config: one declaration per field (type, default, unit, checks, doc), the reference generated
from it, and `arrl config` printing what a run used."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from arrl import config as config_mod
from arrl import paths
from arrl.config import Config, ConfigError, fields

ROOT = Path(__file__).resolve().parents[2]


def _fields():
    for f in dataclasses.fields(Config):
        section = getattr(Config(), f.name)
        if dataclasses.is_dataclass(section):
            for g in dataclasses.fields(section):
                yield f.name, g, getattr(section, g.name)
        else:
            yield "", f, section


def test_every_field_is_declared_once_with_a_doc_and_passes_its_own_checks():
    seen = 0
    for section, f, default in _fields():
        seen += 1
        assert f.metadata.get("doc"), f"[{section}] {f.name} has no doc"
        assert default is None and fields.unset_word(f) or isinstance(default, config_mod.field_type(section, f.name))
        where = f"[{section}] {f.name}"
        assert fields.check(default, f, where) == default
    assert seen > 80


def test_the_reference_is_generated_from_the_fields():
    doc = (ROOT / "docs" / "CONFIG.md").read_text()
    assert doc == config_mod.reference(), "docs/CONFIG.md is out of date: run `python -m arrl.config`"
    out = subprocess.run([sys.executable, "-m", "arrl.config", "--check"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    for section, f, _ in _fields():
        assert f"{f.name} = " in doc, f.name


def test_a_config_reads_back_from_its_toml(tmp_path):
    cfg = config_mod.from_dict({"target": "synthetic", "name": "x", "policy": {"kind": "scripted",
                                "completions": ["a", "b \"quoted\""]},
                                "search": {"abort_every": 0.25, "early_abort": True}, "learner": {"lr": 1e-5}})
    path = tmp_path / "c.toml"
    path.write_text(config_mod.to_toml(cfg))
    assert config_mod.load(path) == cfg


@pytest.mark.parametrize("value,message", [(0.0, "must be > 0"), (1.5, "must be within [0, 1]")])
def test_a_field_with_two_checks_enforces_both(value, message):
    with pytest.raises(ConfigError, match=r"\[search\] abort_every: " + message.replace("[", r"\[")):
        config_mod.from_dict({"search": {"abort_every": value}})


def test_unset_is_none_spelled_auto_or_off_and_older_sentinels_still_read_as_unset(tmp_path):
    unset = [(s, f) for s, f, _ in _fields() if fields.unset_word(f)]
    assert {f"{s}.{f.name}" for s, f in unset} >= {
        "policy.num_gpus", "learner.num_gpus", "workers.threads", "workers.budget_s", "workers.grace_s",
        "workers.memory_mb", "workers.image", "placement.cores", "placement.reserve_cores", "learner.minibatch_size",
        "learner.grad_clip", "learner.advantage_scale", "learner.threads", "learner.mmap_mb", "integrity.floor_bpb",
        "oracle.max_experiments", "oracle.max_wall_s", "oracle.max_gpu_hours", "oracle.target_bpb", "oracle.plateau",
        "oracle.max_failed_edits"}
    for section, f in unset:
        where = f"[{section}] {f.name}"
        legacy = f.metadata["legacy"]
        assert legacy is not None, where  # every one of them had a sentinel before
        for spelled in (None, fields.unset_word(f), legacy):
            assert getattr(getattr(config_mod.from_dict({section: {f.name: spelled}}), section), f.name) is None
        # the other word is a mistake, named as one (a string field takes it as a value: a tag, a core list)
        other = "off" if fields.unset_word(f) == "auto" else "auto"
        if fields.value_type(f) is str:
            continue
        with pytest.raises(ConfigError, match=rf"\[{section}\] {f.name}: expected .* or \"{fields.unset_word(f)}\""):
            config_mod.from_dict({section: {f.name: other}})
    # a config with every field unset prints its words, and reads back as the same config
    cfg = Config()
    for section, f in unset:
        setattr(getattr(cfg, section), f.name, None)
    path = tmp_path / "unset.toml"
    path.write_text(config_mod.to_toml(cfg))
    assert 'budget_s = "auto"' in path.read_text() and 'plateau = "off"' in path.read_text()
    assert config_mod.load(path) == cfg
    # a legacy ledger's config.json (0 and -1) is the same config as the new one's (null)
    assert config_mod.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_the_two_clips_have_distinct_names_and_the_old_one_still_reads():
    cfg = config_mod.from_dict({"reward": {"clip": 3.0}, "learner": {"clip": 0.1}})
    assert (cfg.reward.clip_sigmas, cfg.learner.ratio_clip) == (3.0, 0.1)
    with pytest.raises(ConfigError, match=r"\[learner\] clip: the older name of ratio_clip"):
        config_mod.from_dict({"learner": {"clip": 0.1, "ratio_clip": 0.2}})


def test_arrl_config_prints_what_a_run_used(tmp_path):
    from arrl import target as target_mod
    from arrl.ledger.store import Store
    from env import profiles

    runs = tmp_path / "runs"
    (runs / "r1").mkdir(parents=True)
    cfg = config_mod.from_dict({"target": "synthetic", "name": "r1", "oracle": {"max_experiments": 7},
                                "workers": {"grace_s": 3.0}})
    (runs / "r1" / "config.json").write_text(json.dumps(cfg.to_dict()))
    store = Store(runs / "r1")
    with store.tx():
        store.put("placement", {"mode": "reserved", "cores": "0-2", "worker_cores": ["1-2"], "policy_cores": "0",
                                "learner_cores": "0", "why": "test"})
    store.close()
    arrl = [sys.executable, "-m", "arrl"]
    out = subprocess.run(arrl + ["config", "r1", "--runs-dir", str(runs)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "max_experiments = 7  # " in out.stdout and 'target = "synthetic"' in out.stdout
    # the unset fields are shown as the run resolved them: the target's budget, the placement's cores
    tgt = target_mod.load("synthetic", paths.targets_dir())
    assert f"budget_s = {tgt.budget_s!r}  # auto, resolved; " in out.stdout
    assert "grace_s = 3.0  # extra" in out.stdout  # set, not resolved
    assert "threads = 2  # auto, resolved; torch threads per run" in out.stdout
    assert 'cores = "0-2"  # auto, resolved' in out.stdout and "reserve_cores = 1  # auto, resolved" in out.stdout
    assert f"floor_bpb = {profiles.get(tgt.profile).bpb_floor!r}  # auto, resolved" in out.stdout
    assert 'image = "auto"' in out.stdout  # chosen on the worker's node: not known here
    (tmp_path / "printed.toml").write_text(out.stdout)
    printed = config_mod.load(tmp_path / "printed.toml")
    assert printed.oracle == cfg.oracle and printed.workers.budget_s == tgt.budget_s
    # a config file (not a run) prints its unset fields as such
    (tmp_path / "file.toml").write_text('target = "synthetic"\n')
    out = subprocess.run(arrl + ["config", str(tmp_path / "file.toml")], capture_output=True, text=True)
    assert out.returncode == 0 and 'budget_s = "auto"' in out.stdout
    bad = subprocess.run(arrl + ["config", "nope", "--runs-dir", str(runs)], capture_output=True, text=True)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "no run there" in bad.stderr
