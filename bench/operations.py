"""What the operator waits for: the CPU sandbox image build, `arrl report`, `arrl launch --submit`.

    .venv/bin/python bench/operations.py image      # cold build (removes the CPU image and its base first)
    .venv/bin/python bench/operations.py report [--experiments 200]
    .venv/bin/python bench/operations.py submit

`image`: `arrl image build` from nothing (debootstrap, import, docker build) and again with
the tag present. Needs root and a Docker engine (DOCKER_HOST, `scripts/dockerd.sh start`).
`report`: a synthetic run of N experiments on the simulated backend (random catalog
policy, 8 fake GPUs), then `arrl report` on it, timed end to end (export + figures + HTML).
`submit`: a head started with `ray start --head` (fake GPUs); the seconds until `arrl
launch --submit` returns, and until the job (a 20-experiment synthetic run) has finished.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def bench_image() -> dict:
    from arrl.worker.sandbox import images
    from arrl.worker.sandbox.engine import client

    c = client()
    for img in c.images.list():
        if any(t.startswith((f"{images.CPU_SANDBOX_REPO}:cpu", images.BASE)) for t in img.tags):
            c.images.remove(img.id, force=True)
    t0 = time.monotonic()
    tag = images.build_cpu_sandbox(c, progress=True)
    cold = time.monotonic() - t0
    t0 = time.monotonic()
    images.build_cpu_sandbox(c, progress=False)
    warm = time.monotonic() - t0
    size = c.images.get(tag).attrs["Size"]
    return {"tag": tag, "cold_s": round(cold, 1), "present_s": round(warm, 3), "size_gb": round(size / 1e9, 2)}


def bench_report(n: int) -> dict:
    from arrl import config as config_mod
    from arrl.launch import launch

    runs = Path(tempfile.mkdtemp(prefix="arrl-bench-report-"))
    cfg = config_mod.from_dict({
        "target": "synthetic", "name": "report-bench",
        "policy": {"kind": "random", "fmt": "catalog", "group_size": 4},
        "workers": {"count": 8, "gpus_per_worker": 1.0, "sandbox": "simulated", "budget_s": 0.05},
        "search": {"noise_runs": 3}, "oracle": {"max_experiments": n}})
    _, d = launch(cfg, runs=runs, log=lambda s: None)
    t0 = time.monotonic()
    out = subprocess.run([str(BIN / "arrl"), "report", "report-bench", "--runs-dir", str(runs)], capture_output=True,
                         text=True, check=True)
    wall = time.monotonic() - t0
    html = (d / "report" / "summary.html").stat().st_size
    return {"experiments": n, "report_s": round(wall, 2), "summary_html_kb": round(html / 1024),
            "files": out.stdout.split()}


def bench_submit() -> dict:
    socks = [socket.socket() for _ in range(3)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    gcs, dash, metrics = (s.getsockname()[1] for s in socks)
    for s in socks:
        s.close()
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)
    subprocess.run([str(BIN / "ray"), "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(gcs),
                    "--num-cpus", "4", "--num-gpus", "2", "--dashboard-port", str(dash),
                    "--metrics-export-port", str(metrics), "--disable-usage-stats"], env=env, check=True,
                   capture_output=True)
    try:
        tmp = Path(tempfile.mkdtemp(prefix="arrl-bench-submit-"))
        (tmp / "run.toml").write_text('target = "synthetic"\n[policy]\nkind = "random"\nfmt = "catalog"\n'
                                      '[workers]\ncount = 2\ngpus_per_worker = 1.0\nsandbox = "simulated"\n'
                                      'budget_s = 0.2\n[oracle]\nmax_experiments = 20\n')
        url = f"http://127.0.0.1:{dash}"
        t0 = time.monotonic()
        out = subprocess.run([str(BIN / "arrl"), "launch", str(tmp / "run.toml"), "--submit", "--address", url,
                              "--runs-dir", str(tmp / "runs"), "--name", "submit-bench"], env=env,
                             capture_output=True, text=True, check=True)
        returned = time.monotonic() - t0
        job = re.search(r"as Ray job (\S+)", out.stdout).group(1)
        from ray.job_submission import JobStatus, JobSubmissionClient

        token = Path.home() / ".ray" / "auth_token"
        client = JobSubmissionClient(url, headers={"Authorization": f"Bearer {token.read_text().strip()}"}
                                     if token.is_file() else None)
        deadline = time.monotonic() + 300
        while client.get_job_status(job) not in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
            if time.monotonic() > deadline:
                raise SystemExit(f"job {job} did not finish in 300 s")
            time.sleep(0.5)
        finished = time.monotonic() - t0
        st = str(client.get_job_status(job))
        return {"submit_returned_s": round(returned, 2), "job_finished_s": round(finished, 1),
                "state": st}
    finally:
        subprocess.run([str(BIN / "ray"), "stop", "--force"], env=env, capture_output=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["image", "report", "submit"])
    ap.add_argument("--experiments", type=int, default=200)
    a = ap.parse_args()
    res = {"image": bench_image, "submit": bench_submit}.get(a.what, lambda: bench_report(a.experiments))()
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
