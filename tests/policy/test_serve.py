"""`arrl serve`: the policy server on its own, with a trained adapter, reached with the openai SDK; stopped
cleanly by Ctrl-C; and what it refuses, in one line, before anything starts."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from arrl.policy import models
from arrl.policy import serve

ROOT = Path(__file__).resolve().parents[2]


def _arrl(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "arrl", *args], capture_output=True, text=True, timeout=120, **kw)


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_answers_with_the_adapter_through_the_openai_sdk_and_stops_on_ctrl_c(tiny_model, make_adapter,
                                                                                   tmp_path):
    import openai

    adapter = make_adapter(tiny_model, tmp_path / "adapter", zero=False)
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "arrl", "serve", "--adapter", str(adapter), "--model",
                             str(tiny_model), "--port", str(port), "--threads", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    lines = []
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            line = proc.stdout.readline()
            assert line, "".join(lines)[-3000:]  # EOF: it exited before serving
            lines.append(line)
            if line.startswith("serving "):
                break
        banner = lines[-1]
        assert f"http://127.0.0.1:{port}/v1" in banner and "models: base, adapter" in banner, banner
        # the server's processes (its guard detaches them into a process group of their own), to check they
        # are gone afterwards: the one that listens on the port, and all it started
        api = [p for p in psutil.process_iter(["cmdline"]) if "--port" in (p.info["cmdline"] or [])
               and str(port) in p.info["cmdline"]]
        kids = api + [k for p in api for k in p.children(recursive=True)]
        assert kids
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none")
        assert {m.id for m in client.models.list().data} >= {"base", "adapter"}
        out = {}
        for name in ("base", "adapter"):
            r = client.completions.create(model=name, prompt="def train(", max_tokens=8, temperature=0.0, seed=0)
            out[name] = r.choices[0].text
        assert out["adapter"] != out["base"]  # the adapter (random A and B) is really applied
    finally:
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, rest[-2000:]
    assert rest.strip().endswith("stopped")
    time.sleep(1)
    assert not [k for k in kids if _alive(k)]
    with socket.socket() as s, pytest.raises(ConnectionRefusedError):
        s.connect(("127.0.0.1", port))  # nothing listens there any more


def test_serve_refuses_in_one_line_before_starting(tiny_model, make_adapter, tmp_path):
    adapter = make_adapter(tiny_model, tmp_path / "adapter", zero=True)
    other = models.build_tiny(tmp_path / "other" / "tiny-random", seed=1)  # same name, other weights
    cases = [
        (["--adapter", str(adapter), "--model", str(other)], "an adapter for base tiny-random"),
        (["--adapter", "no-such-run", "--runs-dir", str(tmp_path)], "no run 'no-such-run'"),
        (["--adapter", str(tmp_path / "other")], "not an adapter folder"),
    ]
    for args, want in cases:
        r = _arrl("serve", *args, "--port", str(_free_port()))
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and want in r.stderr, (args, r.stderr)
        assert "serving" not in r.stdout


def test_a_runs_adapter_is_found_by_run_and_version(tiny_model, make_adapter, tmp_path, monkeypatch):
    run = tmp_path / "runs" / "r1"
    (run / "learner").mkdir(parents=True)
    (run / "ledger.sqlite").write_bytes(b"")
    for v in (3, 4):
        make_adapter(tiny_model, run / "learner" / f"ckpt-{v:06d}" / "adapter", zero=True)
    newest, label = serve.find_adapter("r1", tmp_path / "runs")
    assert newest == run / "learner" / "ckpt-000004" / "adapter" and label == "r1 v4"
    assert serve.find_adapter("r1:3", tmp_path / "runs")[0] == run / "learner" / "ckpt-000003" / "adapter"
    with pytest.raises(serve.ServeError, match="no adapter version 7 \\(it keeps 3, 4\\)"):
        serve.find_adapter("r1:7", tmp_path / "runs")
    shutil.rmtree(run / "learner")
    with pytest.raises(serve.ServeError, match="has no trained adapter"):
        serve.find_adapter("r1", tmp_path / "runs")
    # the base the adapter records, resolved here: a built-in name, built in this machine's model cache
    monkeypatch.setenv("ARRL_MODEL_HOME", str(tmp_path / "cache"))
    p = serve.plan(None, str(make_adapter(tiny_model, tmp_path / "a", zero=True)), tmp_path / "runs")
    assert p.model == str(tmp_path / "cache" / "tiny-random") and p.adapter == tmp_path / "a"
    assert models.base_identity(p.model)["sha256"] == models.base_identity(tiny_model)["sha256"]
