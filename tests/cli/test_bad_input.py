"""Bad input everywhere: every config field with a wrong type, unknown options of every command, a
corrupted ledger, a run directory that cannot be used, a full disk. Each is one line on stderr naming
the problem, a non-zero exit, no traceback, and nothing already recorded is changed."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from arrl import cli
from arrl import config as config_mod
from arrl.config import Config, ConfigError

WRONG = {int: "seven", float: "seven", bool: "yes", str: 7, list: 7}


def _fields():
    for top in dataclasses.fields(Config):
        default = getattr(Config(), top.name)
        if dataclasses.is_dataclass(default):
            for f in dataclasses.fields(default):
                yield top.name, f.name, config_mod.field_type(top.name, f.name)
        else:
            yield None, top.name, type(default)


FIELDS = list(_fields())


@pytest.mark.parametrize("section,name,kind", FIELDS, ids=[f"{s or 'top'}.{n}" for s, n, _ in FIELDS])
def test_every_config_field_refuses_a_wrong_type(section, name, kind):
    data = {section: {name: WRONG[kind]}} if section else {name: WRONG[kind]}
    where = f"[{section}] {name}" if section else name
    with pytest.raises(ConfigError) as e:
        config_mod.from_dict(data, "c.toml")
    msg = str(e.value)
    assert msg.startswith(f"c.toml: {where}: expected {kind.__name__}") and "\n" not in msg
    assert ", got " in msg
    if kind is float:
        for bad in (float("nan"), float("inf")):
            with pytest.raises(ConfigError, match=re.escape(f"{where}: must be a finite")):
                config_mod.from_dict({section: {name: bad}} if section else {name: bad}, "c.toml")


def test_section_shapes_and_unknown_names():
    for data, message in [({"oracle": 3}, "[oracle] must be a table, got int"),
                          ({"oracel": {}}, "unknown field 'oracel'"),
                          ({"search": {"margin": 1.0}}, "[search] margin: unknown field"),
                          ({"workers": {"sandbox": "vm"}}, "[workers] sandbox: 'vm' is not one of"),
                          ({"learner": {"lr": 0.0}}, "[learner] lr: must be > 0"),
                          ({"oracle": {"max_experiments": -1}}, "[oracle] max_experiments: must be > 0"),
                          ({"oracle": {"plateau": "auto"}}, '[oracle] plateau: expected int or "off", got str'),
                          ({"learner": {"gamma": 1.5}}, "[learner] gamma: must be within [0, 1]")]:
        with pytest.raises(ConfigError) as e:
            config_mod.from_dict(data, "c.toml")
        assert message in str(e.value), (data, str(e.value))


def run_cli(capsys, *argv) -> tuple[int, str]:
    rc = cli.main(list(argv))
    err = capsys.readouterr().err
    return rc, err


COMMANDS = [["prepare"], ["run", "tiny"], ["launch"], ["status"], ["stop", "x"], ["export", "x"], ["report", "x"],
            ["image", "build"], ["bench", "abort", "x"], ["bench", "research", "--target", "synthetic", "--experiments", "1"]]


@pytest.mark.parametrize("argv", COMMANDS, ids=[" ".join(a) for a in COMMANDS])
def test_unknown_options_of_every_command(capsys, argv):
    rc, err = run_cli(capsys, *argv, "--no-such-option")
    assert rc == 2 and err == "arrl: error: unrecognized arguments: --no-such-option\n", err


def test_bad_config_files_through_the_cli(capsys, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("target = \n")
    cases = [(str(bad), f"{bad}: not valid TOML"), (str(tmp_path / "none.toml"), "no such config file"),
             (str(tmp_path), "cannot read the config file")]
    for path, message in cases:
        rc, err = run_cli(capsys, "launch", path, "--runs-dir", str(tmp_path / "runs"))
        assert rc == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "runs").exists()  # nothing was started


def digest(d: Path) -> dict[str, str]:
    """sha256 of every file of a run; SQLite's -wal/-shm side files (a read-only reader of a WAL ledger
    creates them) only count if the WAL holds something, i.e. if something was written."""
    out = {}
    for p in sorted(d.rglob("*")):
        if p.is_file() and not (p.name.endswith(("-shm", "-wal")) and
                                (p.name.endswith("-shm") or p.stat().st_size == 0)):
            out[str(p.relative_to(d))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A real, finished run of the loop (synthetic target, random policy, 6 experiments)."""
    from arrl.launch import launch

    cfg = config_mod.from_dict({"target": "synthetic", "name": "done",
                                "policy": {"kind": "random", "fmt": "catalog", "group_size": 2},
                                "workers": {"count": 2, "sandbox": "simulated", "budget_s": 0.1},
                                "search": {"noise_runs": 2}, "oracle": {"max_experiments": 6}})
    reason, d = launch(cfg, runs=tmp_path_factory.mktemp("good") / "runs", log=lambda s: None)
    assert reason.startswith("experiment budget reached")
    return d


def arrl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "arrl", *args], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONUNBUFFERED="1"))


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_corrupted_ledger_is_named_and_left_untouched(finished_run, tmp_path, damage):
    runs = tmp_path / "runs"
    d = runs / "done"
    shutil.copytree(finished_run, d)
    ledger = d / "ledger.sqlite"
    raw = ledger.read_bytes()
    ledger.write_bytes(b"this is not a database" * 40 if damage == "garbage" else raw[: len(raw) // 3])
    for name in ("ledger.sqlite-wal", "ledger.sqlite-shm"):
        (d / name).unlink(missing_ok=True)
    before = digest(d)
    for args in (["status", "done"], ["export", "done"], ["report", "done"], ["launch", "--resume", "done"]):
        out = arrl(*args, "--runs-dir", str(runs))
        assert out.returncode == 2, (args, out.stdout[-500:], out.stderr[-2000:])
        assert out.stderr.startswith(f"arrl: error: {ledger}") and out.stderr.count("\n") == 1, (args, out.stderr)
        assert "Traceback" not in out.stderr
        assert digest(d) == before, args  # nothing was repaired, rewritten or added


def test_a_run_directory_that_cannot_be_used(tmp_path, capsys):
    not_a_dir = tmp_path / "runs"
    not_a_dir.write_text("a file where the runs directory should be\n")
    cfg = tmp_path / "c.toml"
    cfg.write_text('target = "synthetic"\nname = "x"\n[workers]\nsandbox = "simulated"\n')
    rc, err = run_cli(capsys, "launch", str(cfg), "--runs-dir", str(not_a_dir))
    assert rc == 2 and "cannot use the run directory" in err and str(not_a_dir) in err and err.count("\n") == 1
    # a ledger that is a directory
    d = tmp_path / "runs2" / "y"
    (d / "ledger.sqlite").mkdir(parents=True)
    for cmd in ("status", "export"):
        rc, err = run_cli(capsys, cmd, "y", "--runs-dir", str(tmp_path / "runs2"))
        assert rc == 2 and "ledger.sqlite" in err and err.count("\n") == 1, err


def _mount_tmpfs(where: Path, size: str) -> bool:
    where.mkdir(parents=True)
    if os.geteuid() != 0:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True).returncode == 0


def test_a_full_disk_stops_cleanly_and_loses_nothing(finished_run, tmp_path):
    mnt = tmp_path / "small"
    if not _mount_tmpfs(mnt, "16m"):
        pytest.skip("needs root to mount a small tmpfs")
    try:
        runs = mnt / "runs"
        shutil.copytree(finished_run, runs / "done")
        cfg_path = runs / "done" / "config.json"
        import json

        cfg = json.loads(cfg_path.read_text())
        cfg["oracle"]["max_experiments"] = 40  # more to do, so the resumed driver must write
        cfg_path.write_text(json.dumps(cfg))
        rows_before = sqlite3.connect(runs / "done" / "ledger.sqlite").execute(
            "SELECT id, status, val_bpb, reward FROM experiments ORDER BY id").fetchall()
        filler = mnt / "filler"
        with open(filler, "wb") as f:  # fill the disk to the last block
            try:
                while True:
                    f.write(b"\0" * (1 << 16))
                    f.flush()
            except OSError:
                pass
        out = arrl("launch", "--resume", "done", "--runs-dir", str(runs))
        assert out.returncode != 0, out.stdout[-2000:]
        last = out.stderr.splitlines()[-1]  # after the start-up progress bars
        assert last.startswith(f"arrl: error: {runs / 'done'}") and "Traceback" not in out.stderr, out.stderr[-3000:]
        assert "no space left" in last or "disk is full" in last, last
        filler.unlink()
        rows_after = sqlite3.connect(runs / "done" / "ledger.sqlite").execute(
            "SELECT id, status, val_bpb, reward FROM experiments ORDER BY id").fetchall()
        assert rows_after[: len(rows_before)] == rows_before  # every recorded result is still there
        out = arrl("launch", "--resume", "done", "--runs-dir", str(runs))  # with space again it goes on
        assert out.returncode == 0, out.stderr[-3000:]
        n = sqlite3.connect(runs / "done" / "ledger.sqlite").execute(
            "SELECT COUNT(*) FROM experiments WHERE kind!='baseline'").fetchone()[0]
        assert n >= 40
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
