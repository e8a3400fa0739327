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
from arrl.config import Config, ConfigError

ROOT = Path(__file__).resolve().parent.parent


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
        assert isinstance(default, config_mod.field_type(section, f.name)), (section, f.name)
        where = f"[{section}] {f.name}"
        assert config_mod._check(default, f, where) == default
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


def test_arrl_config_prints_what_a_run_used(tmp_path):
    runs = tmp_path / "runs"
    (runs / "r1").mkdir(parents=True)
    cfg = config_mod.from_dict({"target": "synthetic", "name": "r1", "oracle": {"max_experiments": 7}})
    (runs / "r1" / "config.json").write_text(json.dumps(cfg.to_dict()))
    arrl = [sys.executable, "-m", "arrl"]
    out = subprocess.run(arrl + ["config", "r1", "--runs-dir", str(runs)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "max_experiments = 7  # " in out.stdout and 'target = "synthetic"' in out.stdout
    (tmp_path / "printed.toml").write_text(out.stdout)
    assert config_mod.load(tmp_path / "printed.toml") == cfg
    bad = subprocess.run(arrl + ["config", "nope", "--runs-dir", str(runs)], capture_output=True, text=True)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "no run there" in bad.stderr
