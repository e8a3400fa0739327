"""The adversarial corpus: hostile train.py scripts against both sandboxes.

Every file in tests/worker/adversarial/ is one train.py-like script, opening with a docstring that says what it tries.
Together they cover: the network (TCP and UDP to listeners this test opens on the host, DNS and HTTP, the host's
Unix sockets and an abstract one); writes into the environment (env code, data manifest and shards, by link,
by remount from a new user namespace), into another run (its directory, ledger.sqlite, git repository, another
experiment's scratch folder), and into kernel knobs and device nodes; reads of the validation split, of host
secrets (an environment variable of this process, a canary file in $HOME), of host processes through /proc, and a
survey of every writable or interesting place in reach; cheating the metric (a printed or forged fake metric,
monkeypatched env.evaluate or torch, modules planted for the evaluator to import, a custom operator, look-ahead
models, a pickle payload in the model file, symlinks and FIFOs for the evaluator or the host to follow, poisoned
progress records, a model that makes evaluation crawl, a model swapped after exit); and resource abuse (fork
bomb, memory hog, disk filler, RAM file systems, absurd thread counts, ignoring SIGTERM, sleeping past the budget,
a background process that tries to outlive the run, killing every process in sight, files left in /tmp and
/dev/shm, a flooded log, binary garbage on stdout, exiting 0 without a model).

Each case runs in BOTH sandboxes: the process sandbox with isolation "bwrap" and the Docker sandbox with the
self-contained CPU image (`cpu_sandbox_image`); test ids are `<case>-process` and `<case>-docker`. The table
CASES gives each case its expected status (a set where the sandboxes legitimately differ), configuration
overrides and extra checks. Every case also checks that nothing outside the run changed (`World.snapshot`: the
sha256 of every file of the env dir and the data dir plus `manifest.verify(full=True)`, the sibling run's tree
with its ledger and git repository, another experiment's scratch folder, the home canary), that no process of the
run and no container with its labels is left, that a sentinel host process is alive, that the host listeners
received nothing, that no script reports `ESCAPED`, and that the secret and the canary's contents appear in
nothing the run produced. Scripts get host-specific values through `{{NAME}}` placeholders (`render`).
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import psutil
import pytest

from arrl.worker.sandbox.process import ProcessSandbox
from arrl.worker.sandbox.config import SandboxConfig, bwrap_available

CORPUS = Path(__file__).resolve().parent / "adversarial"
SECRET_VAR = "ARRL_TEST_SECRET"
BASE_CFG = {"budget_s": 2.0, "grace_s": 20.0, "memory_mb": 1024, "threads": 1, "eval_timeout_s": 60.0}
SHORT = {"budget_s": 1.0, "grace_s": 1.0}  # cases that must be killed: budget + grace of 2 s
LABELS = {"arrl.run": "adversarial"}


# ---- per-case checks ------------------------------------------------------------------------------------------

def _within_grace(ctx):
    cfg = ctx.cfg
    assert ctx.wall < cfg.budget_s + cfg.grace_s + 8, f"killed after {ctx.wall:.1f} s"


def _fast(ctx):
    assert ctx.wall < 30, f"the run took {ctx.wall:.1f} s: the host blocked"


def _peak_rss_bounded(ctx):
    assert ctx.out.peak_rss_mb < ctx.cfg.memory_mb + 512


def _no_curve_leak(ctx):
    assert all(step != 777 for _, step, _ in ctx.out.curve), f"the canary's record came back: {ctx.out.curve}"


def _good_records_kept(ctx):
    points = [(step, loss) for _, step, loss in ctx.out.curve]
    assert (1, 4.0) in points and (2, 3.5) in points, points
    assert all(0 <= step < 2 ** 63 for step, _ in points) and ctx.out.steps == 2  # the ledger can hold it


def _payload_did_not_run(ctx):
    assert not Path(ctx.values["MARKER"]).exists()
    assert not any(p.name == "PAYLOAD_RAN" for p in ctx.run_dir.rglob("*"))
    assert b"PAYLOAD RAN" not in ctx.eval_log


def _nothing_shadowed(ctx):
    assert b"SHADOW" not in ctx.eval_log, ctx.eval_log[-2000:]


def _survivor_dead(ctx):
    alive = ctx.work / "alive.txt"
    assert alive.exists(), "the background process never ran"
    size = alive.stat().st_size
    time.sleep(1.0)
    assert alive.stat().st_size == size, "a process of the run survived it"


def _no_swap(ctx):
    assert not (ctx.work / "swapped.txt").exists(), "a process of the run was alive during evaluation"


def _log_capped(ctx):
    assert (ctx.run_dir / "train.log").stat().st_size < ctx.cfg.log_cap_bytes + 200
    assert b"bytes dropped" in ctx.log
    assert "THE END" in ctx.out.log_tail


def _readable_record(ctx):
    assert "THE END" in ctx.out.log_tail
    assert json.loads(json.dumps(ctx.out.to_dict()))["status"] == ctx.out.status


def _no_device_nodes(ctx):
    for p in ctx.run_dir.rglob("*"):
        mode = p.lstat().st_mode
        assert not (stat.S_ISBLK(mode) or stat.S_ISCHR(mode)), f"device node {p}"


def _ramfs_bounded(ctx):
    m = re.search(rb"RAMFS TOTAL (\d+) MB", ctx.log)
    if ctx.out.status != "oom":  # an oom kill stops the script before it can report
        assert m, ctx.out.log_tail[-1000:]
    if m:
        assert int(m.group(1)) <= ctx.cfg.memory_mb + 256, "RAM file systems held more than the memory limit"


def _work_bounded(ctx):
    total = sum(p.lstat().st_size for p in ctx.work.rglob("*"))
    assert total < (ctx.cfg.max_work_mb + 512) << 20, f"{total >> 20} MB in the work dir"


def _exit_zero(ctx):
    assert ctx.out.exit_code == 0


# ---- the table ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    name: str  # tests/worker/adversarial/<name>.py
    status: str | tuple[str, ...]  # expected status(es), both sandboxes
    docker: str | tuple[str, ...] | None = None  # Docker's expectation where it differs
    cfg: dict = field(default_factory=dict)  # SandboxConfig overrides
    message: str = ""  # regex the outcome's message must match
    log: tuple[str, ...] = ()  # strings train.log must contain
    blocked: int = 0  # at least this many attempts the script reports BLOCKED
    bpb8: bool = False  # val_bpb must be the uniform model's exact 8.0 (the env's number)
    check: Callable | None = None
    timeout: int = 120  # seconds for the test function (fixture set-up, e.g. building the image, not counted)


CASES = [
    Case("net_tcp", "invalid_metric", blocked=3),
    Case("net_udp", "invalid_metric", blocked=1),
    Case("net_dns", "invalid_metric", blocked=6),
    Case("net_unix", "invalid_metric", blocked=7),
    Case("write_env", "invalid_metric", blocked=20),
    Case("hardlink_env", "invalid_metric", blocked=15),
    Case("remount_env", "invalid_metric", blocked=3),
    Case("write_sibling_run", "invalid_metric", blocked=12),
    Case("write_ledger", "invalid_metric", blocked=5),
    Case("write_git", "invalid_metric", blocked=7),
    Case("read_val", "invalid_metric", blocked=5),
    Case("snoop_fs", "invalid_metric", log=("BLOCKED nothing outside the run in reach",)),
    Case("host_secrets", "invalid_metric", blocked=12),
    Case("proc_snoop", "invalid_metric", blocked=2),
    Case("kill_all", "ok", docker="crash", bpb8=True),
    Case("fake_metric", "ok", bpb8=True, log=("val_bpb: 0.000100",)),
    Case("monkeypatch_eval", "invalid_metric", message="causality probe failed"),
    Case("monkeypatch_torch", "ok", bpb8=True),
    Case("shadow_modules", "ok", bpb8=True, check=_nothing_shadowed),
    Case("custom_op", "invalid_metric", message="arrl_adv|cannot be loaded|not allowed"),
    Case("lookahead", "invalid_metric", message="causality probe failed"),
    Case("lookahead_batch", "invalid_metric", message="causality probe failed"),
    Case("pickle_payload", "invalid_metric", message="cannot be loaded", check=_payload_did_not_run),
    Case("symlink_model", "invalid_metric"),
    Case("symlink_progress", "invalid_metric", check=_no_curve_leak),
    Case("fifo_progress", "invalid_metric", check=_fast, timeout=60),
    Case("progress_poison", "invalid_metric", check=_good_records_kept),
    Case("slow_model", "invalid_metric", cfg={"eval_timeout_s": 4.0}, message="evaluation took longer"),
    Case("fork_bomb", ("crash", "oom"), cfg={"max_procs": 32}),
    Case("memory_hog", "oom", cfg={"memory_mb": 512}, check=_peak_rss_bounded),
    Case("disk_filler", "crash", cfg={"max_file_mb": 64, "max_work_mb": 128}, message="work dir",
         check=_work_bounded),
    Case("tmp_filler", "invalid_metric", docker=("invalid_metric", "oom"), cfg={"memory_mb": 256},
         check=_ramfs_bounded),
    Case("tmp_persist", "invalid_metric"),
    Case("sigterm_ignore", "timeout", cfg=SHORT, check=_within_grace),
    Case("sleep_past_budget", "timeout", cfg=SHORT, check=_within_grace),
    Case("survivor", "invalid_metric", check=_survivor_dead),
    Case("model_swap", "ok", bpb8=True, check=_no_swap),
    Case("stdout_flood", "invalid_metric", cfg={"log_cap_bytes": 100_000}, check=_log_capped),
    Case("binary_garbage", "invalid_metric", check=_readable_record),
    Case("proc_sys_write", "invalid_metric", blocked=9),
    Case("devices", "invalid_metric", blocked=15, check=_no_device_nodes),
    Case("thread_bomb", ("crash", "oom")),  # libgomp cannot set up 100,000 threads: the run dies, not the host
    Case("exit_zero_no_model", "invalid_metric", message="no model saved", check=_exit_zero),
]


# ---- the world around a run: things that must not change, listeners, a sentinel --------------------------------

def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def tree(root: Path) -> dict:
    """Every entry under `root` (links not followed): kind, mode and content hash or link target."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            rel = str(p.relative_to(root))
            if stat.S_ISREG(st.st_mode):
                out[rel] = ("file", oct(st.st_mode), st.st_size, _sha256(p))
            elif stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p))
            else:
                out[rel] = ("other", oct(st.st_mode))
    return out


class _Listeners:
    """TCP (dual-stack where possible), UDP (answers every datagram) and an abstract Unix socket on the host,
    each counting what reaches it."""

    def __init__(self):
        self.counts = {"tcp": 0, "udp": 0, "unix": 0}
        self._stop = threading.Event()
        try:
            tcp = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            tcp.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            tcp.bind(("::", 0))
        except OSError:
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            tcp.bind(("0.0.0.0", 0))
        tcp.listen(16)
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("0.0.0.0", 0))
        self.abstract = f"arrl-adversarial-{uuid.uuid4().hex[:12]}"
        unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        unix.bind("\0" + self.abstract)
        unix.listen(16)
        self.tcp_port, self.udp_port = tcp.getsockname()[1], udp.getsockname()[1]
        self._socks = [tcp, udp, unix]
        for kind, sock in (("tcp", tcp), ("udp", udp), ("unix", unix)):
            sock.settimeout(0.2)
            threading.Thread(target=self._serve, args=(kind, sock), daemon=True).start()

    def _serve(self, kind, sock):
        while not self._stop.is_set():
            try:
                if kind == "udp":
                    _, addr = sock.recvfrom(4096)
                    sock.sendto(b"pong", addr)
                else:
                    conn, _ = sock.accept()
                    conn.close()
            except socket.timeout:
                continue
            except OSError:
                return
            self.counts[kind] += 1

    def close(self):
        self._stop.set()
        time.sleep(0.3)
        for sock in self._socks:
            sock.close()


class World:
    """What surrounds the runs: the env and data, a sibling run (ledger, git, experiments), another experiment's
    scratch folder, a canary in $HOME, a secret in this process's environment, a sentinel process, listeners."""

    def __init__(self, base: Path, data_dir: Path):
        from arrl import paths
        from arrl.driver.branch import GitBranch
        from arrl.ledger.store import Store

        self.base, self.data_dir, self.env_dir = base, data_dir, paths.env_dir()
        self.scratch = base / "scratch"
        self.sibling = base / "runs" / "other"
        store = Store(self.sibling)
        store.db.execute("INSERT INTO meta (key, value) VALUES ('run', 'other')")
        store.db.execute("INSERT INTO events (t, kind, data) VALUES (1.0, 'started', '{}')")
        store.close()
        (self.sibling / "config.json").write_text('{"name": "other"}\n')
        exp = self.sibling / "experiments" / "000001"
        exp.mkdir(parents=True)
        (exp / "outcome.json").write_text('{"status": "ok", "val_bpb": 2.5}\n')
        branch = GitBranch(self.sibling / "git", "other")
        branch.ensure("print('baseline')\n")
        branch.commit_once(1, "print('better')\n", "exp 1: val_bpb 2.5", "-baseline\n+better\n")
        self.other_work = self.scratch / "other" / "work"
        self.other_work.mkdir(parents=True)
        (self.other_work / "model.pt2").write_bytes(os.urandom(4096))
        (self.other_work / "progress.jsonl").write_text('{"event": "start", "time": 1.0}\n')
        (self.base / "markers").mkdir()
        self.canary_token = uuid.uuid4().hex
        self.canary = Path.home() / f".arrl-adversarial-canary-{uuid.uuid4().hex[:8]}"
        self.canary.write_text(json.dumps({"event": "step", "elapsed": 0.5, "step": 777, "train_loss": 7.77777,
                                           "secret": self.canary_token}) + "\n")
        self.secret = uuid.uuid4().hex
        self._old_secret = os.environ.get(SECRET_VAR)
        os.environ[SECRET_VAR] = self.secret
        self.sentinel_tag = f"arrl-sentinel-{uuid.uuid4().hex[:12]}"
        self.sentinel = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)", self.sentinel_tag])
        self.listeners = _Listeners()
        self.host_ips = sorted({a.address for addrs in psutil.net_if_addrs().values() for a in addrs
                                if a.family == socket.AF_INET and not a.address.startswith("127.")})
        val = sorted((data_dir / "val").glob("*.parquet"))[0]
        self.val_shard, self.val_sha256 = val, _sha256(val)

    def close(self):
        self.listeners.close()
        self.sentinel.kill()
        self.sentinel.wait()
        self.canary.unlink(missing_ok=True)
        if self._old_secret is None:
            os.environ.pop(SECRET_VAR, None)
        else:
            os.environ[SECRET_VAR] = self._old_secret

    def values(self, name: str, run_dir: Path, token: str) -> dict:
        docker_host = os.environ.get("DOCKER_HOST", "unix:///run/arrl-docker.sock")
        return {
            "TCP_PORT": str(self.listeners.tcp_port), "UDP_PORT": str(self.listeners.udp_port),
            "HOST_IPS": ",".join(self.host_ips), "ABSTRACT_SOCK": self.listeners.abstract,
            "DOCKER_SOCK": docker_host.removeprefix("unix://"),
            "ENV_DIR": str(self.env_dir), "DATA_DIR": str(self.data_dir), "VAL_DIR": str(self.data_dir / "val"),
            "VAL_SHARD_NAME": self.val_shard.name, "VAL_SHA256": self.val_sha256,
            "VAL_SIZE": str(self.val_shard.stat().st_size),
            "SIBLING_RUN": str(self.sibling), "SIBLING_LEDGER": str(self.sibling / "ledger.sqlite"),
            "SIBLING_GIT": str(self.sibling / "git"), "OTHER_WORK": str(self.other_work),
            "HOME_CANARY": str(self.canary), "CANARY_NAME": self.canary.name, "SENTINEL": self.sentinel_tag,
            "MARKER": str(self.base / "markers" / name), "RUN_DIR": str(run_dir), "TOKEN": token,
        }

    def snapshot(self) -> dict:
        from env import manifest

        manifest.verify(self.data_dir, full=True)
        return {
            "env": tree(self.env_dir), "data": tree(self.data_dir), "sibling run": tree(self.sibling),
            "other experiment": tree(self.other_work.parent), "markers": tree(self.base / "markers"),
            "home canary": _sha256(self.canary),
            "listeners": dict(self.listeners.counts), "sentinel alive": self.sentinel.poll() is None,
        }


@pytest.fixture(scope="module")
def world(shakespeare_dir, tmp_path_factory):
    import env.evaluate  # noqa: F401  (every env module imported before the first snapshot: no bytecode appears
    import env.launch  # noqa: F401   in the env dir between two snapshots because this process imported late)
    import env.loader  # noqa: F401
    import env.model_io  # noqa: F401
    import env.progress  # noqa: F401
    import env.runtime  # noqa: F401

    w = World(tmp_path_factory.mktemp("adversarial"), shakespeare_dir)
    yield w
    w.close()


@pytest.fixture
def image(kind, request):
    """The Docker cases' image, resolved during set-up (building it is not the case's time)."""
    return request.getfixturevalue("cpu_sandbox_image") if kind == "docker" else None


def render(text: str, values: dict) -> str:
    """Fill `{{NAME}}` placeholders; an unknown name is an error (KeyError), never left in place."""
    return re.sub(r"\{\{([A-Z][A-Z0-9_]*)\}\}", lambda m: values[m.group(1)], text)


def _diff(before: dict, after: dict) -> str:
    lines = []
    for part in before:
        b, a = before[part], after[part]
        if b == a:
            continue
        if isinstance(b, dict) and all(isinstance(v, tuple) for v in {**b, **a}.values()):
            for key in sorted(set(b) | set(a)):
                if b.get(key) != a.get(key):
                    lines.append(f"{part}: {key}: {b.get(key)} -> {a.get(key)}")
        else:
            lines.append(f"{part}: {b} -> {a}")
    return "\n".join(lines)


def run_processes(run_dir: Path, container_ids: list[str], sentinel: int) -> list[str]:
    """Live processes of the run: any descendant of this test process (the sandboxes' bwrap trees) but the
    sentinel, any process naming the run dir on its command line, any process in one of the run's containers."""
    ours = {p.pid for p in psutil.Process().children(recursive=True)} - {sentinel}
    found = []
    for p in psutil.process_iter(["pid", "status", "cmdline"]):
        try:
            if p.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            cmd = " ".join(p.info["cmdline"] or [])
            cgroup = Path(f"/proc/{p.pid}/cgroup").read_text() if container_ids else ""
        except (psutil.Error, OSError):
            continue
        if p.pid in ours or str(run_dir) in cmd or any(c in cgroup for c in container_ids):
            found.append(f"{p.pid}: {cmd[:160]}")
    return found


def _host_leftovers(token: str) -> list[str]:
    found = []
    for d in ("/tmp", "/dev/shm", "/var/tmp"):
        try:
            found += [f"{d}/{n}" for n in os.listdir(d) if token in n]
        except OSError:
            pass
    return found


def _contains(path: Path, needles: list[bytes]) -> bool:
    keep = max(len(n) for n in needles)
    tail = b""
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            data = tail + block
            if any(n in data for n in needles):
                return True
            tail = data[-keep:]
    return False


def _params():
    for case in CASES:
        for kind in ("process", "docker"):
            # one backend per xdist worker (scripts/test.sh runs the corpus in 2 processes): the Docker half builds
            # its image while the process half runs
            marks = [pytest.mark.timeout(case.timeout, func_only=True), pytest.mark.xdist_group(kind)]
            if kind == "process":
                marks.append(pytest.mark.skipif(not bwrap_available(), reason="bubblewrap missing or unusable"))
            yield pytest.param(case, kind, id=f"{case.name}-{kind}", marks=marks)


def _as_set(s) -> set:
    return {s} if isinstance(s, str) else set(s)


def test_every_case_is_a_documented_file_in_the_table():
    files = {p.stem for p in CORPUS.glob("*.py")}
    assert files == {c.name for c in CASES}, files ^ {c.name for c in CASES}
    assert len(CASES) >= 25 and len({c.name for c in CASES}) == len(CASES)
    for p in CORPUS.glob("*.py"):
        doc = ast.get_docstring(ast.parse(p.read_text()))
        assert doc and len(doc) > 40, f"{p.name} needs a docstring saying what it tries"


@pytest.mark.parametrize("case, kind", list(_params()))
def test_adversarial(case: Case, kind: str, world: World, image):
    from arrl import paths

    cfg = SandboxConfig(**{**BASE_CFG, **case.cfg, "isolation": "bwrap"})
    if kind == "process":
        box = ProcessSandbox(paths.env_dir(), world.data_dir, cfg)
    else:
        from arrl.worker.sandbox.docker import DockerSandbox

        box = DockerSandbox(paths.env_dir(), world.data_dir, cfg, labels={**LABELS, "arrl.worker": case.name},
                            image=image)
    name = f"{case.name}-{kind}"
    run_dir = world.scratch / name
    token = uuid.uuid4().hex[:12]
    values = world.values(name, run_dir, token)
    script = render((CORPUS / f"{case.name}.py").read_text(), values)

    before = world.snapshot()
    t0 = time.monotonic()
    out = box.run(script, run_dir)
    wall = time.monotonic() - t0
    containers = [c.id for c in getattr(box, "_containers", [])]
    print(f"{name}: {out.status} in {wall:.1f} s {out.timings}")

    # nothing outside the run changed, nothing of the run is left
    after = world.snapshot()
    assert after == before, "changed outside the run:\n" + _diff(before, after)
    deadline = time.monotonic() + 5
    while (left := run_processes(run_dir, containers, world.sentinel.pid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"processes of the run are still alive: {left}"
    if kind == "docker":
        from arrl.worker.sandbox.engine import client

        for labels in ([f"arrl.run_dir={run_dir}"], [f"{k}={v}" for k, v in box.labels.items()]):
            assert not client().containers.list(all=True, filters={"label": labels}), f"a container is left: {labels}"
        assert out.isolation.startswith("docker[") and out.isolation.endswith("+bwrap-eval"), out.isolation
    else:
        assert out.isolation == "bwrap"
    assert not _host_leftovers(token), _host_leftovers(token)

    # nothing secret came out, no script saw a way out
    log = (run_dir / "train.log").read_bytes()
    eval_log = (run_dir / "eval.log").read_bytes() if (run_dir / "eval.log").exists() else b""
    needles = [world.secret.encode(), world.canary_token.encode()]
    assert not any(n in json.dumps(out.to_dict()).encode() for n in needles), "a secret is in the outcome"
    for p in run_dir.rglob("*"):
        if p.is_file() and not p.is_symlink():
            assert not _contains(p, needles), f"a secret is in {p}"
    escaped = [line for line in (log + eval_log).splitlines() if line.startswith(b"ESCAPED")]
    assert not escaped, b"\n".join(escaped).decode("utf-8", "replace")

    # the outcome the case must get
    expected = _as_set(case.docker if kind == "docker" and case.docker is not None else case.status)
    assert out.status in expected, f"{out.status}: {out.message}\n{out.log_tail[-3000:]}\n{eval_log[-1500:]!r}"
    if out.status == "ok":
        assert case.bpb8 and out.val_bpb == pytest.approx(8.0, abs=1e-9), out.val_bpb  # the env's number
    else:
        assert out.val_bpb is None
    if case.message:
        assert re.search(case.message, out.message), out.message
    for text in case.log:
        assert text.encode() in log, text
    blocked = [line for line in log.splitlines() if line.startswith(b"BLOCKED ")]
    assert len(blocked) >= case.blocked, log.decode("utf-8", "replace")
    if case.check is not None:
        case.check(SimpleNamespace(out=out, kind=kind, cfg=cfg, run_dir=run_dir, work=run_dir / "work", log=log,
                                   eval_log=eval_log, values=values, wall=wall, world=world))
    shutil.rmtree(run_dir, ignore_errors=True)  # kept only when the case fails
