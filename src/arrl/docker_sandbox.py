"""The Docker sandbox: training runs in a container, evaluation stays outside it.

The training script runs in a container of the image built from `docker/sandbox-host/`
(host /usr, the Python installation and arrl's venv mounted read-only at their own paths;
GPU clusters use the self-contained image of docker/sandbox) with:
  network_mode "none"; a read-only root; the env at /arrl/env and the *train* split at
  /arrl/data read-only; the run's own work dir at /arrl/work writable; /tmp a small tmpfs;
  user 65534; all capabilities dropped, no-new-privileges; memory (= swap) and pids limits;
  the GPU through a DeviceRequest; `init` so signals reach the script; labels naming the
  run, the worker and the run directory; an in-container `timeout -s KILL` as a backstop.
The host watches it like the process sandbox does (the container's processes are visible
from the host: resident memory, process count, budget + grace) and kills it from outside.
The evaluator is the process sandbox's: a separate bwrap sandbox on the host with the val
split, so the container never sees validation data and never computes its own metric.

Containers are removed after each run and, when a worker starts, every container left by
an earlier incarnation of the same worker of the same run (a worker that died mid-run).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import sys
import tarfile
import threading
from pathlib import Path

import docker
from docker.errors import DockerException, NotFound
from docker.types import DeviceRequest
from requests.exceptions import RequestException

from arrl import paths
from arrl.outcome import Outcome
from arrl.sandbox import DATA_MOUNT, ENV_MOUNT, WORK_MOUNT, ProcessSandbox, SandboxConfig

IMAGE = "arrl-sandbox-host"
DOCKERFILE_DIR = Path(__file__).resolve().parents[2] / "docker" / "sandbox-host"
LABEL = "arrl.sandbox"


class DockerUnavailable(RuntimeError):
    """No Docker engine answers, or the sandbox image cannot be built."""


def client() -> docker.DockerClient:
    try:
        c = docker.DockerClient(base_url=os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock", timeout=60)
        c.ping()
        return c
    except (DockerException, RequestException) as e:
        raise DockerUnavailable(f"no Docker engine answers at {os.environ.get('DOCKER_HOST') or 'the default socket'}"
                                f" ({e}); start one with `bash scripts/dockerd.sh start` and export DOCKER_HOST") \
            from None


def _rootfs() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        def add(name: str, kind: bytes, mode: int = 0o755, target: str = "", data: bytes = b""):
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime = kind, mode, 0
            if kind == tarfile.SYMTYPE:
                info.linkname = target
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data else None)
        for link, target in (("bin", "usr/bin"), ("lib", "usr/lib"), ("lib64", "usr/lib64")):
            add(link, tarfile.SYMTYPE, 0o777, target)
        # a real /sbin: the engine mounts its init (docker-init) there, which a link into the
        # read-only /usr mount would refuse
        for d in ("sbin", "tmp", "etc", "arrl", "arrl/env", "arrl/data", "arrl/work", "usr", "proc", "dev", "sys"):
            add(d, tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755)
        add("etc/passwd", tarfile.REGTYPE, 0o644, data=b"root:x:0:0::/root:/bin/false\n"
                                                       b"nobody:x:65534:65534::/arrl/work:/bin/false\n")
        add("etc/group", tarfile.REGTYPE, 0o644, data=b"root:x:0:\nnogroup:x:65534:\n")
    return buf.getvalue()


def image_tag() -> str:
    spec = (DOCKERFILE_DIR / "Dockerfile").read_bytes() + _rootfs()
    return f"{IMAGE}:{hashlib.sha256(spec).hexdigest()[:12]}"


def build_image(c: docker.DockerClient) -> str:
    """Build the host-mount sandbox image once per content hash; returns its tag."""
    tag = image_tag()
    try:
        c.images.get(tag)
        return tag
    except NotFound:
        pass
    ctx = io.BytesIO()
    with tarfile.open(fileobj=ctx, mode="w") as tar:
        for name, data in (("Dockerfile", (DOCKERFILE_DIR / "Dockerfile").read_bytes()), ("rootfs.tar", _rootfs())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    ctx.seek(0)
    try:
        c.images.build(fileobj=ctx, custom_context=True, tag=tag, rm=True, forcerm=True)
    except DockerException as e:
        raise DockerUnavailable(f"building the sandbox image {tag} failed: {e}") from None
    return tag


def remove_labelled(c: docker.DockerClient, labels: dict) -> int:
    """Force-remove every container (running or not) carrying all of `labels`; returns how many."""
    n = 0
    for ctr in c.containers.list(all=True, filters={"label": [f"{k}={v}" for k, v in labels.items()]}):
        try:
            ctr.remove(force=True)
            n += 1
        except (DockerException, RequestException):
            pass  # already gone
    return n


def sweep_run(run: str) -> int:
    """Remove every sandbox container of run `run` (the driver does this when it stops)."""
    try:
        return remove_labelled(client(), {LABEL: "1", "arrl.run": run})
    except DockerUnavailable:
        return 0


class _Container:
    """A running container seen through the small part of subprocess.Popen the sandbox uses."""

    def __init__(self, container):
        self.container = container
        container.reload()
        self.pid = container.attrs["State"]["Pid"]  # its init, on the host
        self.returncode = None
        self.oom_killed = False
        r, w = os.pipe()
        self.stdout = os.fdopen(r, "rb")
        self._w = w
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        try:
            for chunk in self.container.attach(stdout=True, stderr=True, stream=True, logs=True):
                os.write(self._w, chunk)
        except (DockerException, RequestException, OSError):
            pass
        finally:
            os.close(self._w)

    def poll(self):
        if self.returncode is None:
            try:
                self.container.reload()
                st = self.container.attrs["State"]
            except (DockerException, RequestException):
                return None
            if st["Status"] in ("exited", "dead"):
                self.returncode = st["ExitCode"]
                self.oom_killed = bool(st.get("OOMKilled"))
        return self.returncode

    def wait(self, timeout=None):
        try:
            self.container.wait(timeout=timeout)
        except (DockerException, RequestException):
            pass
        return self.poll()

    def kill(self) -> None:
        try:
            self.container.kill()
        except (DockerException, RequestException):
            pass


class DockerSandbox(ProcessSandbox):
    def __init__(self, env_dir: Path, data_dir: Path, config: SandboxConfig, labels: dict | None = None,
                 docker_client: docker.DockerClient | None = None):
        # the evaluator uses the process sandbox's isolation (bwrap where available)
        super().__init__(env_dir, data_dir, config)
        self.client = docker_client or client()
        self.image = build_image(self.client)
        self.labels = {LABEL: "1", **(labels or {})}
        self.isolation_eval = self.isolation
        self._containers: list = []
        self.sweep()

    def sweep(self) -> int:
        """Remove every container carrying this sandbox's labels (orphans of a dead worker)."""
        return remove_labelled(self.client, self.labels)

    def _spawn(self, cmd, split, run_dir, work, writable, token, seed, **popen):
        if split != "train":
            return super()._spawn(cmd, split, run_dir, work, writable, token, seed, **popen)
        cfg = self.config
        env = self._env_vars(token, DATA_MOUNT, WORK_MOUNT, str(Path(ENV_MOUNT).parent), seed)
        env["HOME"], env["TMPDIR"] = WORK_MOUNT, "/tmp"
        os.chmod(work, 0o777)  # the container's user 65534 writes the model and progress here
        vols = {"/usr": {"bind": "/usr", "mode": "ro"},
                str(self.env_dir): {"bind": ENV_MOUNT, "mode": "ro"},
                str(work): {"bind": WORK_MOUNT, "mode": "rw"}}
        if os.path.exists("/etc/ld.so.cache"):
            vols["/etc/ld.so.cache"] = {"bind": "/etc/ld.so.cache", "mode": "ro"}
        for prefix in {sys.base_prefix, sys.prefix, str(Path(cfg.python).resolve().parent.parent)}:
            if not prefix.startswith("/usr"):
                vols[prefix] = {"bind": prefix, "mode": "ro"}
        for item in self._data_items("train"):
            vols[str(item)] = {"bind": f"{DATA_MOUNT}/{item.name}", "mode": "ro"}
        backstop = ["timeout", "-s", "KILL", str(int(cfg.budget_s + cfg.grace_s + 10))]
        devices = [DeviceRequest(device_ids=[str(cfg.gpu)], capabilities=[["gpu"]])] if cfg.gpu is not None else []
        labels = {**self.labels, "arrl.run_dir": str(run_dir)}
        mem = f"{cfg.memory_mb + 256}m"  # the host watchdog (memory_mb) acts first and names it oom
        try:
            ctr = self.client.containers.run(
                self.image, backstop + self._limits() + cmd, detach=True, environment=env, volumes=vols,
                working_dir=WORK_MOUNT, network_mode="none", mem_limit=mem, memswap_limit=mem,
                pids_limit=cfg.max_procs + 8, read_only=True, tmpfs={"/tmp": "size=512m,mode=1777"},
                cap_drop=["ALL"], security_opt=["no-new-privileges"], user="65534:65534", init=True,
                labels=labels, device_requests=devices, hostname="arrl-sandbox")
        except DockerException as e:
            # a container whose start failed (e.g. no GPU driver) stays "Created": remove it
            remove_labelled(self.client, {"arrl.run_dir": str(run_dir)})
            raise DockerUnavailable(f"the sandbox container did not start: {str(e)[:400]}") from None
        self._containers.append(ctr)
        return _Container(ctr)

    def run(self, source: str, run_dir: Path, seed: int = 0, env_hash: str = "", on_progress=None) -> Outcome:
        self._containers = []
        try:
            out = super().run(source, run_dir, seed, env_hash, on_progress)
            ctr = self._containers[-1] if self._containers else None
            if ctr is not None and out.status == "crash":
                ctr.reload()
                if ctr.attrs["State"].get("OOMKilled"):
                    out = dataclasses.replace(out, status="oom", message="killed by the container's memory limit")
            return dataclasses.replace(out, isolation=f"docker+{self.isolation}-eval")
        finally:
            for ctr in self._containers:
                try:
                    ctr.remove(force=True)
                except (DockerException, RequestException):
                    pass
