"""The command line: readable outcomes, and one-line errors with exit code 2 on bad input."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ARRL = str(Path(sys.executable).parent / "arrl")  # the console script of the venv running the tests


def _arrl(*args, env=None):
    return subprocess.run([ARRL, *args], capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})})


@pytest.mark.parametrize("args, env, message", [
    (["run", "nope"], {}, "unknown target 'nope'"),
    (["run", "tiny"], {"ARRL_DATA_HOME": "/nonexistent"}, "data for profile 'shakespeare' is not usable"),
    (["run", "tiny", "--source", "/nonexistent/train.py"], {}, "cannot read --source"),
    (["run", "tiny", "--budget", "-3"], {}, "--budget must be positive"),
    (["run", "tiny", "--bogus"], {}, "unrecognized arguments: --bogus"),
    (["fly"], {}, "invalid choice: 'fly'"),
    (["prepare", "--profile", "moon"], {}, "invalid choice: 'moon'"),
    (["launch", "/nonexistent.toml"], {}, "/nonexistent.toml: no such config file"),
    (["launch", "--resume", "ghost"], {"ARRL_RUNS_DIR": "/tmp"}, "no run named 'ghost' to resume"),
    (["launch", "--name", "a/b"], {}, "must be a plain folder name"),
    (["status", "ghost"], {"ARRL_RUNS_DIR": "/tmp"}, "no run there"),
    (["stop", "ghost"], {"ARRL_RUNS_DIR": "/tmp"}, "no run there"),
    (["export", "ghost"], {"ARRL_RUNS_DIR": "/tmp"}, "no run there"),
    (["launch", "--adress", "auto"], {}, "unrecognized arguments: --adress"),
])
def test_bad_input_is_one_line_and_exit_2(args, env, message, shakespeare_dir):
    env = {"ARRL_DATA_HOME": str(shakespeare_dir.parent), **env}
    proc = _arrl(*args, env=env)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("arrl: error: ")
    assert message in proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


def test_unreadable_source_file(tmp_path, shakespeare_dir):
    bad = tmp_path / "train.py"
    bad.write_bytes(b"\xff\xfe\x00 not utf-8")
    proc = _arrl("run", "tiny", "--source", str(bad), env={"ARRL_DATA_HOME": str(shakespeare_dir.parent)})
    assert proc.returncode == 2 and "cannot read --source" in proc.stderr


def test_run_with_source_prints_a_readable_outcome(tmp_path, shakespeare_dir):
    src = tmp_path / "train.py"
    src.write_text("raise SystemExit(3)\n")
    proc = _arrl("run", "tiny", "--source", str(src), "--budget", "2",
                 env={"ARRL_DATA_HOME": str(shakespeare_dir.parent), "ARRL_RUNS_DIR": str(tmp_path / "runs")})
    assert proc.returncode == 1
    fields = dict(line.split(": ", 1) for line in proc.stdout.splitlines())
    assert fields["status"] == "crash" and fields["message"] == "exit code 3"
    assert (Path(fields["run_dir"]) / "outcome.json").is_file()
    assert (Path(fields["run_dir"]) / "train.py").read_text() == "raise SystemExit(3)\n"


def test_prepare_and_verify(tmp_path):
    proc = _arrl("prepare", "--data-home", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "train_shards: 5" in proc.stdout
    proc = _arrl("prepare", "--verify", "--data-home", str(tmp_path))
    assert proc.returncode == 0
    shard = tmp_path / "shakespeare" / "train" / "shard_00002.parquet"
    shard.write_bytes(shard.read_bytes()[:-1] + b"\0")
    proc = _arrl("prepare", "--verify", "--data-home", str(tmp_path))
    assert proc.returncode == 2 and "shard_00002.parquet: sha256 mismatch" in proc.stderr


def test_web_prepare_from_a_local_server(tmp_path, web_fixture):
    _, url = web_fixture
    proc = _arrl("prepare", "--profile", "web", "--base-url", url, "--shards", "2", "--val-index", "9",
                 "--data-home", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "web" / "tokenizer.json").is_file()
    proc = _arrl("prepare", "--profile", "web", "--base-url", "http://127.0.0.1:9", "--shards", "1",
                 "--data-home", str(tmp_path / "other"))
    assert proc.returncode == 2 and proc.stderr.startswith("arrl: error: http://127.0.0.1:9/SHA256SUMS")


def test_launch_config_errors_name_the_field(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('target = "tiny"\n[workers]\ncount = "two"\n')
    proc = _arrl("launch", str(cfg))
    assert proc.returncode == 2 and "[workers] count: expected int, got str 'two'" in proc.stderr
    cfg.write_text('target = "tiny"\n[oracle]\nmax_experiment = 3\n')
    proc = _arrl("launch", str(cfg))
    assert proc.returncode == 2 and "[oracle] max_experiment: unknown field" in proc.stderr
    cfg.write_text('target = "nope"\n')
    proc = _arrl("launch", str(cfg), "--runs-dir", str(tmp_path / "runs"))
    assert proc.returncode == 2 and "unknown target 'nope'" in proc.stderr and proc.stderr.count("\n") == 1


def test_research_help_names_every_benchmark_method():
    """`arrl bench research --help` offers every method the benchmark knows (it once left out population)."""
    from arrl.bench import research
    from arrl.cli import RESEARCH_METHODS

    assert tuple(RESEARCH_METHODS.split(",")) == research.METHODS
    out = _arrl("bench", "research", "--help", env={"COLUMNS": "1000"}).stdout  # no wrapping at hyphens
    assert f"subset of {RESEARCH_METHODS} " in out
