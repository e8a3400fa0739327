"""The warm start's checks (arrl.driver.lineage) on hand-made runs: every bad source is one line before
anything starts, and a chain of warm starts reads back nearest first. The warm start itself, with a real
learner and vLLM, is in tests/learner/test_learning.py (the run resumed after a kill starts the next)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from arrl import config as config_mod
from arrl.config import ConfigError
from arrl.driver import lineage
from arrl.ledger.store import Store
from arrl.policy.adapters import canonical_config, sha256_files

ADAPTER = {"adapter_config.json": canonical_config(b'{"r": 16}'), "adapter_model.safetensors": b"weights"}


def source_run(runs: Path, name: str, versions=(1, 2), kept=(2,), model="m", rank=16, link=None,
               recorded: dict | None = None) -> Path:
    d = runs / name
    s = Store(d)
    (d / "config.json").write_text(json.dumps({"name": name, "policy": {"model": model}, "learner": {"rank": rank}}))
    with s.tx():
        for v in versions:
            s.add_policy_version(v, adapter_sha256=(recorded or {}).get(v, sha256_files(ADAPTER)))
        if link:
            s.put("lineage", link)
    s.close()
    for v in kept:
        ckpt = d / "learner" / f"ckpt-{v:06d}"
        (ckpt / "adapter").mkdir(parents=True)
        (ckpt / "state.pkl").write_bytes(b"state")
        for n, b in ADAPTER.items():
            (ckpt / "adapter" / n).write_bytes(b)
    return d


def cfg(model="m", rank=16):
    return config_mod.from_dict({"policy": {"model": model}, "learner": {"rank": rank}})


def test_a_source_is_its_last_version_or_the_one_named(tmp_path):
    source_run(tmp_path, "night-1", kept=(1, 2))
    last = lineage.source("night-1", tmp_path, cfg())
    assert (last.run, last.version, last.adapter_sha256) == ("night-1", 2, sha256_files(ADAPTER))
    assert Path(last.ckpt) == tmp_path / "night-1" / "learner" / "ckpt-000002"
    assert lineage.source("night-1:1", tmp_path, cfg()).version == 1


@pytest.mark.parametrize("spec, setup, message", [
    ("nope", {}, "no run 'nope' in"),
    ("night-1:9", {}, "has adapter versions 1-2, not 9"),
    ("night-1:0", {}, "the version must be a number >= 1"),
    ("night-1:x", {}, "the version must be a number >= 1"),
    (".x", {}, "is not RUN, RUN:VERSION or a run folder's path"),
    ("../x", {}, "no run 'x' in"),
    ("./night-1:x", {}, "the version must be a number >= 1"),
    ("night-1:1", {}, "no longer keeps a checkpoint of version 1 (it keeps 2; [learner] keep_checkpoints)"),
    ("night-1", {"versions": ()}, "trained no adapter version"),
    ("night-1", {"model": "other"}, "trained for the base model 'other'; this run's policy model is 'm'"),
    ("night-1", {"rank": 8}, "has LoRA rank 8; this run's [learner] rank is 16"),
    ("night-1", {"recorded": {2: "f" * 64}}, "is not the one run 'night-1' recorded for version 2"),
])
def test_a_bad_source_is_one_line_naming_it(tmp_path, spec, setup, message):
    source_run(tmp_path, "night-1", **setup)
    with pytest.raises(ConfigError) as e:
        lineage.source(spec, tmp_path, cfg())
    assert message in str(e.value) and "\n" not in str(e.value)
    assert str(e.value).startswith(f"[learner] warm_start")


def test_a_bad_source_stops_arrl_launch_before_anything_starts(tmp_path):
    source_run(tmp_path, "night-1", rank=8)
    conf = tmp_path / "c.toml"
    conf.write_text('target = "synthetic"\nname = "night-2"\n[policy]\nmodel = "m"\n')
    r = subprocess.run([sys.executable, "-m", "arrl", "launch", str(conf), "--warm-start", "night-1",
                        "--runs-dir", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "LoRA rank 8" in r.stderr and not (tmp_path / "night-2").exists()
    r = subprocess.run([sys.executable, "-m", "arrl", "launch", "--resume", "night-1", "--warm-start", "night-1",
                        "--runs-dir", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--warm-start starts a new run" in r.stderr
    conf.write_text('target = "synthetic"\nname = "night-3"\n[policy]\nkind = "random"\n')
    r = subprocess.run([sys.executable, "-m", "arrl", "launch", str(conf), "--warm-start", "night-1",
                        "--runs-dir", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "only a vllm policy serves an adapter, not kind 'random'" in r.stderr, r.stderr
    assert not (tmp_path / "night-3").exists()


def test_a_source_in_another_folder_is_named_by_its_path(tmp_path):
    """A run of another runs folder (another night's, a shared disk's) is a source by its path; the lineage
    keeps that path, and the chain follows it there."""
    elsewhere = source_run(tmp_path / "other", "night-1", kept=(1, 2))
    runs = tmp_path / "runs"
    src = lineage.source(str(elsewhere), runs, cfg())
    assert (src.run, src.version, src.dir) == ("night-1", 2, str(elsewhere.resolve()))
    assert src.link() == {"run": "night-1", "version": 2, "adapter_sha256": sha256_files(ADAPTER),
                          "dir": str(elsewhere.resolve())}
    assert lineage.source(f"{elsewhere}:1", runs, cfg()).version == 1
    assert lineage.source("night-1", tmp_path / "other", cfg()).link().keys() == {"run", "version", "adapter_sha256"}
    d = source_run(runs, "night-2", link=src.link())
    assert [(x["run"], x.get("missing")) for x in lineage.chain(d)] == [("night-1", None)]
    with pytest.raises(ConfigError, match=r"no run 'night-9' in .*other"):
        lineage.source(str(tmp_path / "other" / "night-9"), runs, cfg())


def test_the_chain_reads_nearest_first_and_marks_a_missing_ancestor(tmp_path):
    source_run(tmp_path, "night-1")
    source_run(tmp_path, "night-2", link={"run": "night-1", "version": 2, "adapter_sha256": "a" * 64})
    d3 = source_run(tmp_path, "night-3", link={"run": "night-2", "version": 1, "adapter_sha256": "b" * 64})
    links = lineage.chain(d3)
    assert [(x["run"], x["version"]) for x in links] == [("night-2", 1), ("night-1", 2)]
    assert lineage.describe(links) == "warm-started from night-2 v1 <- night-1 v2"
    assert lineage.chain(tmp_path / "night-1") == [] and lineage.describe([]) == ""
    d4 = source_run(tmp_path, "night-4", link={"run": "deleted", "version": 3, "adapter_sha256": "c" * 64})
    assert lineage.describe(lineage.chain(d4)) == "warm-started from deleted v3 (gone)"


def test_one_adapter_has_one_hash_whichever_process_saved_it(tmp_path):
    """PEFT writes target_modules (a set) in the order of the saving process's string hashes."""
    from arrl.policy.adapters import adapter_files

    hashes = set()
    for order in (["q_proj", "k_proj", "v_proj"], ["v_proj", "q_proj", "k_proj"]):
        d = tmp_path / "-".join(order)
        d.mkdir()
        (d / "adapter_config.json").write_text(json.dumps({"target_modules": order, "r": 16}))
        (d / "adapter_model.safetensors").write_bytes(b"weights")
        hashes.add(sha256_files(adapter_files(d)))
        assert json.loads(adapter_files(d)["adapter_config.json"])["target_modules"] == ["k_proj", "q_proj", "v_proj"]
    assert len(hashes) == 1


def test_a_run_recorded_before_the_canonical_config_is_still_a_source(tmp_path):
    """Runs before 2026-12-06 recorded the hash of the config as PEFT wrote it."""
    raw = {"adapter_config.json": b'{"target_modules": ["v_proj", "q_proj"], "r": 16}',
           "adapter_model.safetensors": b"weights"}
    d = source_run(tmp_path, "old", recorded={2: sha256_files(raw)})
    for name, data in raw.items():
        (d / "learner" / "ckpt-000002" / "adapter" / name).write_bytes(data)
    assert lineage.source("old", tmp_path, cfg()).version == 2
