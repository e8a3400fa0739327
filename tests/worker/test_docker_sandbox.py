"""The Docker sandbox against a real Docker engine that the test setup starts (scripts/dockerd.sh).

The containment tests use the self-contained CPU image (arrl.worker.sandbox.images; built once per session,
shared with test_images); one test runs the tiny target in the host-mount image.
"""

from __future__ import annotations

import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from arrl.worker.sandbox.config import SandboxConfig

ROOT = Path(__file__).resolve().parents[2]


def sandbox(data_dir, image, labels=None, **cfg):
    from arrl import paths
    from arrl.worker.sandbox.docker import DockerSandbox

    config = SandboxConfig(**{"budget_s": 2.0, "grace_s": 8.0, "memory_mb": 1024, "threads": 1, **cfg})
    return DockerSandbox(paths.env_dir(), data_dir, config, labels=labels or {"arrl.run": "t", "arrl.worker": "w"},
                         image=image)


def containers(labels: dict) -> list:
    from arrl.worker.sandbox.engine import client

    return client().containers.list(all=True, filters={"label": [f"{k}={v}" for k, v in labels.items()]})


def test_tiny_target_trains_and_evaluates_in_the_host_mount_image(docker_host, shakespeare_dir, tmp_path):
    from arrl import paths

    box = sandbox(shakespeare_dir, "host", budget_s=4.0, grace_s=30.0, memory_mb=3072)
    assert not box.self_contained and box.image.startswith("arrl-sandbox-host:")
    out = box.run((paths.targets_dir() / "tiny" / "train.py").read_text(), tmp_path / "run")
    assert out.status == "ok", out.message + out.log_tail
    assert 3.0 < out.val_bpb < 8.0 and out.isolation.startswith("docker")
    assert "steps:" in out.log_tail and out.timings.train_s > 0 and out.timings.setup_s is not None
    assert not containers({"arrl.run": "t", "arrl.worker": "w"})  # removed after the run


SCRIPT = """
import socket, sys
from pathlib import Path
from env import model_io, progress
results = []
try:
    socket.create_connection(("127.0.0.1", {port}), timeout=2)
    results.append("connect: ok")
except OSError as e:
    results.append(f"connect: refused {{type(e).__name__}}")
try:
    socket.getaddrinfo("pypi.org", 443)
    results.append("dns: ok")
except OSError as e:
    results.append("dns: failed")
for path in ("/arrl/env/evaluate.py", "/arrl/data/manifest.json", "/usr/bin/owned"):
    try:
        open(path, "a").write("x")
        results.append(f"write {{path}}: ok")
    except OSError as e:
        results.append(f"write {{path}}: refused")
results.append("val visible: " + str(Path("/arrl/data/val").exists()))
results.append("host venv visible: " + str(Path({venv!r}).exists()))
results.append("python: " + sys.executable)
print("\\n".join(results), flush=True)
"""


def test_container_has_no_network_and_read_only_env_and_data(cpu_sandbox_image, shakespeare_dir, tmp_path):
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    env_file = ROOT / "env" / "evaluate.py"
    before = env_file.read_bytes()
    from test_sandbox import UNIFORM_MODEL

    script = textwrap.dedent(SCRIPT.format(port=port, venv=sys.prefix)) + textwrap.dedent(UNIFORM_MODEL)
    # a wide grace: this test is about containment; a cold container start plus torch's import measured past
    # the default 2 + 8 s once in a full CI run (status `timeout`)
    out = sandbox(shakespeare_dir, cpu_sandbox_image, grace_s=60.0).run(script, tmp_path / "run")
    listener.close()
    log = out.log_tail
    assert "connect: refused" in log and "dns: failed" in log, log
    assert "write /arrl/env/evaluate.py: refused" in log and "write /arrl/data/manifest.json: refused" in log
    assert "write /usr/bin/owned: refused" in log and "val visible: False" in log
    assert "host venv visible: False" in log and "python: /usr/bin/python3" in log  # the image's own Python
    assert out.status == "ok" and out.val_bpb == pytest.approx(8.0, abs=1e-9)  # the env's number, outside
    assert env_file.read_bytes() == before


def test_run_past_its_budget_is_killed_and_removed(cpu_sandbox_image, shakespeare_dir, tmp_path):
    script = "import time\nfrom env import progress\nrun = progress.start()\nwhile True:\n    time.sleep(0.1)\n"
    t0 = time.monotonic()
    out = sandbox(shakespeare_dir, cpu_sandbox_image, budget_s=1.0, grace_s=3.0).run(script, tmp_path / "run")
    assert out.status == "timeout" and time.monotonic() - t0 < 20
    assert not containers({"arrl.run": "t", "arrl.worker": "w"})


def test_memory_hog_is_oom(cpu_sandbox_image, shakespeare_dir, tmp_path):
    script = "chunks = []\nwhile True:\n    chunks.append(b'x' * (64 << 20))\n"
    out = sandbox(shakespeare_dir, cpu_sandbox_image, memory_mb=512).run(script, tmp_path / "run")
    assert out.status == "oom", out.message + out.log_tail


def test_output_of_a_script_that_ends_at_once_is_kept_whole(cpu_sandbox_image, shakespeare_dir, tmp_path,
                                                             monkeypatch):
    """The container is attached before it starts: a script that prints and exits before the host looks at it
    keeps every line. A busy host is simulated by a slow first look (an attach after the start lost all of the
    output, or its first lines, in a CI run)."""
    from docker.models.containers import Container

    reload = Container.reload

    def slow_reload(self):
        time.sleep(1.5)  # the script has printed and exited by now
        reload(self)

    monkeypatch.setattr(Container, "reload", slow_reload)
    lines = [f"line {i:03d}" for i in range(300)]
    for trial in range(2):
        run_dir = tmp_path / f"run{trial}"
        sandbox(shakespeare_dir, cpu_sandbox_image).run(f"print({chr(10).join(lines)!r})\n", run_dir)
        got = (run_dir / "train.log").read_text().splitlines()
        assert [ln for ln in got if ln.startswith("line ")] == lines, got[:5]


def test_orphans_of_a_dead_worker_are_swept_when_it_restarts(cpu_sandbox_image, shakespeare_dir, tmp_path):
    from arrl.worker.sandbox.engine import client

    labels = {"arrl.run": "sweep", "arrl.worker": "worker-0"}
    c = client()
    orphan = c.containers.run(cpu_sandbox_image, ["sleep", "300"], detach=True, network_mode="none",
                              labels={"arrl.sandbox": "1", **labels})
    other = c.containers.run(cpu_sandbox_image, ["sleep", "300"], detach=True, network_mode="none",
                             labels={"arrl.sandbox": "1", "arrl.run": "sweep", "arrl.worker": "worker-1"})
    try:
        assert containers(labels)
        sandbox(shakespeare_dir, cpu_sandbox_image, labels=labels)  # a new incarnation of worker-0 starts
        assert not containers(labels)
        other.reload()
        assert other.status == "running"  # another worker's container is not touched
    finally:
        for ctr in (orphan, other):
            try:
                ctr.remove(force=True)
            except Exception:  # noqa: BLE001 - already removed
                pass


def test_the_watchdog_only_takes_a_pid_that_is_the_containers(cpu_sandbox_image):
    """The host signals the container's init by pid: it must be that container's process, never 0 (our own group)."""
    import os

    from arrl.worker.sandbox.docker import _NO_PID, _Container, _ours, _start_attached
    from arrl.worker.sandbox.engine import client

    ctr = client().containers.create(cpu_sandbox_image, ["sleep", "300"], network_mode="none", init=True,
                                     labels={"arrl.sandbox": "1", "arrl.run": "pid"})
    try:
        watched = _Container(ctr, _start_attached(ctr))
        pid = ctr.attrs["State"]["Pid"]
        assert _ours(pid, ctr.id) and not _ours(os.getpid(), ctr.id)
        assert watched.pid == pid
        ctr.kill()
        ctr.wait(timeout=10)
        assert _Container(ctr, iter(())).pid == _NO_PID  # exited: State.Pid is 0
    finally:
        ctr.remove(force=True)


def test_gpu_request_without_a_gpu_driver_fails_cleanly(cpu_sandbox_image, shakespeare_dir, tmp_path):
    """On a CPU machine the GPU path can only show its error handling: a clear error, nothing left behind."""
    from arrl.worker.sandbox.engine import DockerUnavailable

    labels = {"arrl.run": "gpu", "arrl.worker": "w"}
    box = sandbox(shakespeare_dir, cpu_sandbox_image, labels=labels, gpu="0")
    with pytest.raises(DockerUnavailable, match="did not start.*(device driver|gpu)"):
        box.run("print('never runs')\n", tmp_path / "run")
    assert not containers(labels)
    assert not any("env.evaluate" in " ".join(p.info["cmdline"] or []) and str(tmp_path) in " ".join(
        p.info["cmdline"] or []) for p in psutil.process_iter(["cmdline"]))  # the evaluator did not leak


def test_missing_image_is_named_in_the_error(docker_host, shakespeare_dir, monkeypatch):
    """The image comes from ARRL_SANDBOX_IMAGE when not given; an absent one is an error, never a silent fallback."""
    from arrl.worker.sandbox.engine import DockerUnavailable

    monkeypatch.setenv("ARRL_SANDBOX_IMAGE", "arrl-sandbox:no-such-tag")
    with pytest.raises(DockerUnavailable, match="arrl-sandbox:no-such-tag is not in the Docker engine"):
        sandbox(shakespeare_dir, None)
