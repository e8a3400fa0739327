"""`arrl launch --submit`: the research loop as a Ray job, so it outlives the client.

The job's entrypoint is `arrl launch` itself, run on the head node with `--address auto` by
the Python that runs Ray there (HEAD_SCRIPT: not whatever `arrl` the head's PATH finds, if any);
the launch config travels in the job's working directory (runtime_env `working_dir`), and
the run is named here so the client can print how to follow it. The runs directory is the
head's: `--runs-dir` when given (an absolute path on the head), otherwise `$ARRL_RUNS_DIR`
there (cluster.yaml sets /mnt/arrl/runs), otherwise `~/arrl-runs` on the head.

Address: the Ray Jobs API talks to the dashboard's HTTP port (8265). `--address` may be
that URL, `ray://host:10001` (its host, port 8265) or `auto`/empty ($RAY_ADDRESS when it
is an http URL, else http://127.0.0.1:8265 - e.g. through `ray dashboard cluster.yaml`).
"""

from __future__ import annotations

import os
import shlex
import shutil
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

from arrl.config import Config


class SubmitError(RuntimeError):
    """The job could not be submitted; the message names why."""


def dashboard_url(address: str | None) -> str:
    a = (address or "").strip()
    if a in ("", "auto"):
        env = os.environ.get("RAY_ADDRESS", "")
        return env if env.startswith(("http://", "https://")) else "http://127.0.0.1:8265"
    if a.startswith(("http://", "https://")):
        return a.rstrip("/")
    if a.startswith("ray://"):
        host = urlparse(a).hostname or "127.0.0.1"
        return f"http://{host}:8265"
    host = a.split(":")[0]  # host:port of the GCS: the dashboard listens on the same host
    return f"http://{host}:8265"


HEAD_SCRIPT = "arrl-on-head.sh"
# The job's entrypoint runs this from its working directory. It starts arrl with the Python that runs
# Ray on the head: the job supervisor, an ancestor of this shell, has Ray's _raylet.so mapped from that
# Python's prefix (a venv, conda or system install). So the job does not depend on the head's PATH,
# which need not hold the venv that `ray start` came from. $ARRL_PYTHON overrides it.
HEAD_SCRIPT_TEXT = r"""# arrl on the Ray head, with the Python that runs Ray there (written by arrl launch --submit)
pid=$PPID prefix=
while [ -z "$prefix" ] && [ "${pid:-0}" -gt 1 ]; do  # up from the shell Ray ran this in, to the supervisor
    prefix=$(sed -n 's#^.* \(/.*\)/lib/python3[.0-9]*/[a-z-]*packages/ray/_raylet[^/]*\.so$#\1#p' \
             "/proc/$pid/maps" 2>/dev/null | head -n 1)
    pid=$(sed -n 's/^PPid:[[:space:]]*//p' "/proc/$pid/status" 2>/dev/null)
done
for py in "$ARRL_PYTHON" "$prefix/bin/python3" "$prefix/bin/python"; do
    if [ -n "$py" ] && [ -x "$py" ] && "$py" -c "import arrl" 2>/dev/null; then
        exec "$py" -m arrl "$@"
    fi
done
echo "arrl: no Python with arrl found on this node (Ray's prefix: ${prefix:-unknown}); set ARRL_PYTHON" >&2
exit 127
"""


def entrypoint(name: str, config_file: str | None, resume: str | None, runs_dir: Path | None,
               track: dict | None = None) -> str:
    args = ["sh", HEAD_SCRIPT, "launch"]
    if config_file:
        args.append(config_file)
    args += ["--resume", resume] if resume else ["--name", name]
    args += ["--address", "auto"]
    for k, v in sorted((track or {}).items()):  # --mlflow, --wandb, --webhook as given to `arrl launch --submit`
        args += [f"--{k}", v]
    cmd = " ".join(shlex.quote(a) for a in args)
    return f"{cmd} --runs-dir {runs_arg(runs_dir)}"


def runs_arg(runs_dir: Path | None) -> str:
    """The runs directory on the head as a shell word: the given one, else the head's default."""
    return shlex.quote(str(runs_dir)) if runs_dir else '"${ARRL_RUNS_DIR:-$HOME/arrl-runs}"'


def local_command(name: str) -> str:
    """`ray` or `arrl` as this machine can run it whatever its PATH: the executable beside this
    interpreter (the venv's), else `python -m arrl` for arrl, else the bare name."""
    import sys

    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return shlex.quote(str(beside))
    return f"{shlex.quote(sys.executable)} -m arrl" if name == "arrl" else name


def follow_commands(job_id: str, name: str, url: str, runs_dir: Path | None) -> list[tuple[str, str]]:
    """The commands that follow a submitted run, as they work when pasted into a shell: Ray's CLI on this
    machine with the cluster's token mode when one is in use (it sends the token only then), and
    `arrl status` with the runs directory the job writes to, for the head."""
    auth = "RAY_AUTH_MODE=token " if os.environ.get("RAY_AUTH_MODE") == "token" else ""
    ray_cli = local_command("ray")
    job, addr = shlex.quote(job_id), shlex.quote(url)
    status = f"status {shlex.quote(name)} --runs-dir {runs_arg(runs_dir)}"
    out = [("follow its log", f"{auth}{ray_cli} job logs --follow {job} --address {addr}"),
           ("its state", f"{auth}{ray_cli} job status {job} --address {addr}"),
           ("stop it", f"{auth}{ray_cli} job stop {job} --address {addr}")]
    # the run's status is read on the head, whose `arrl` this client cannot know: a cluster node's image has it
    # on PATH; when this machine is the head and its PATH lacks arrl, the one beside this interpreter
    if shutil.which("arrl") is None:
        out.append(("its run (if this is the head)", f"{local_command('arrl')} {status}"))
    out.append(("its run (on the head)", f"arrl {status}"))
    return out


def submit(cfg: Config, config_path: Path | None, resume: str | None, address: str | None,
           runs_dir: Path | None, track: dict | None = None) -> tuple[str, str, str]:
    """Submit the run; returns (job id, run name, dashboard URL)."""
    from ray.job_submission import JobSubmissionClient

    url = dashboard_url(address)
    name = resume or cfg.name or f"{Path(cfg.target).name}-{time.strftime('%Y%m%d-%H%M%S')}"
    if "/" in cfg.target or cfg.target.startswith("."):
        raise SubmitError(f"target {cfg.target!r} is a path on this machine; with --submit name a target installed "
                          f"on the head (a folder of its targets/, or set ARRL_TARGETS_DIR there)")
    if runs_dir is not None and not runs_dir.is_absolute():
        raise SubmitError(f"--runs-dir {runs_dir}: must be an absolute path on the head node with --submit")
    try:
        client = JobSubmissionClient(url)
    except Exception as e:  # noqa: BLE001 - connection errors come in many types
        if "uthentication" in str(e):
            raise SubmitError(f"the Ray dashboard at {url} needs the cluster's auth token: set RAY_AUTH_TOKEN to the "
                              f"output of `ray get-auth-token` on the head") from None
        raise SubmitError(f"no Ray dashboard answers at {url} ({str(e).splitlines()[0][:200]}); start the cluster "
                          f"(`ray up cluster.yaml`) and forward it (`ray dashboard cluster.yaml`), or pass "
                          f"--address http://HEAD:8265") from None
    work = Path(tempfile.mkdtemp(prefix="arrl-submit-"))
    try:
        config_file = None
        if config_path is not None:
            config_file = "launch.toml"
            shutil.copyfile(config_path, work / config_file)
        (work / HEAD_SCRIPT).write_text(HEAD_SCRIPT_TEXT)
        job_id = f"arrl-{name}-{os.urandom(3).hex()}"
        try:
            client.submit_job(entrypoint=entrypoint(name, config_file, resume, runs_dir, track), submission_id=job_id,
                              runtime_env={"working_dir": str(work)},
                              metadata={"arrl_run": name}, entrypoint_num_cpus=0)
        except Exception as e:  # noqa: BLE001
            raise SubmitError(f"the job was refused by {url}: {str(e).splitlines()[0][:300]}") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return job_id, name, url
