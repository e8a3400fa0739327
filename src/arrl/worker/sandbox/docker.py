"""The Docker sandbox: training runs in a container, evaluation stays outside it.

The image is chosen per sandbox (`image`; default: $ARRL_SANDBOX_IMAGE, else "host"):
- "host": the host-mount image built from docker/sandbox-host (images.py), an almost
  empty root with the host's /usr, /etc/ld.so.cache, the Python installation and arrl's
  venv mounted read-only at their own paths; the script runs with the host's interpreter.
  Cheap and exact on one machine; not usable where the engine's host is another file
  system (a Ray node container talking to the host's engine).
- any other tag: a self-contained image (`arrl-sandbox:cpu` from docker/sandbox-cpu,
  `arrl-sandbox:cuda` from docker/sandbox, or one of your own) with python3 in /usr/local/bin, /usr/bin or /bin
  (the sandbox sets PATH to those three)
  and torch, numpy and pyarrow installed. Nothing of the host is mounted but the three
  folders below, and the script runs with the image's `python3`. The image must exist in
  the engine: `arrl image build` builds the CPU one; a missing tag is an error.
Either way the container runs with:
  network_mode "none"; a read-only root; the env at /arrl/env and the *train* split at
  /arrl/data read-only (the val split is never mounted); the run's own work dir at
  /arrl/work writable; /tmp a small tmpfs; user 65534; all capabilities dropped,
  no-new-privileges; memory (= swap) and pids limits; the GPU through a DeviceRequest
  (inside, it is CUDA device 0); the run's cores as `cpuset_cpus` (arrl.ops.placement); `init` so signals reach the script; labels naming the
  run, the worker and the run directory; an in-container `timeout -s KILL` as a backstop.
The host watches it like the process sandbox does (resident memory, process count, budget
+ grace) and kills it from outside; that needs the container's processes visible, i.e.
arrl in the engine's pid namespace (on the host, or a node container run with
`--pid=host`), and a container whose init is not visible is refused. A run killed by the
container's own memory limit is `oom`. The evaluator is the process sandbox's: a separate
bwrap sandbox on the host with the val split, so the container never sees validation data
and never computes its own metric.

Containers are removed after each run and, when a worker starts, every container left by
an earlier incarnation of the same worker of the same run (a worker that died mid-run).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import threading
from pathlib import Path

import docker
from docker.errors import DockerException, NotFound
from docker.types import DeviceRequest
from requests.exceptions import RequestException

from arrl.worker.outcome import Outcome
from arrl.worker.sandbox import images
from arrl.worker.sandbox.config import DATA_MOUNT, ENV_MOUNT, WORK_MOUNT, SandboxConfig
from arrl.worker.sandbox.engine import LABEL, DockerUnavailable, client, remove_labelled
from arrl.worker.sandbox.process import ProcessSandbox

HOST_IMAGE = "host"  # the host-mount image (docker/sandbox-host)
IMAGE_PYTHON = "python3"  # a self-contained image's interpreter, found on the sandbox's PATH


_NO_PID = (1 << 22) + 1  # above any pid_max: no process has it, so signalling it reaches nobody


def _ours(pid: int, container_id: str) -> bool:
    """Whether `pid` here is a process of that container (its cgroup path names the container)."""
    try:
        return container_id in Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return False


def _start_attached(container):
    """Start a created `container`, attached to its output first; returns the output stream. An attach after the
    start loses the output of a script that ends at once: the engine refuses to attach to a stopped container."""
    stream = container.attach(stdout=True, stderr=True, stream=True, logs=True)  # the request is made here
    try:
        container.start()
    except BaseException:
        stream.close()
        raise
    return stream


class _Container:
    """A running container seen through the small part of subprocess.Popen the sandbox uses."""

    def __init__(self, container, stream):
        """`container` is started, `stream` its attached output (see _start_attached)."""
        self.container = container
        container.reload()
        pid = container.attrs["State"]["Pid"]  # its init, in the engine's pid namespace; 0 once it exited
        if pid and not _ours(pid, container.id):
            container.reload()
            if container.attrs["State"]["Status"] in ("exited", "dead"):
                pid = 0  # it finished between the two looks: nothing left to watch
        if pid and not _ours(pid, container.id):
            raise DockerUnavailable(
                f"the sandbox container's processes are not visible here (pid {pid} is not in container "
                f"{container.id[:12]}): run arrl in the Docker engine's pid namespace (a node container needs "
                "`--pid=host`), or the watchdog could neither measure nor kill it")
        # the sandbox signals this pid's group: never 0 (that would be our own group)
        self.pid = pid or _NO_PID
        self.returncode = None
        self.oom_killed = False
        r, w = os.pipe()
        self.stdout = os.fdopen(r, "rb")
        self._w = w
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream) -> None:
        try:
            for chunk in stream:
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
                 docker_client: docker.DockerClient | None = None, image: str | None = None):
        # the evaluator uses the process sandbox's isolation (bwrap where available)
        super().__init__(env_dir, data_dir, config)
        self.client = docker_client or client()
        image = image or os.environ.get("ARRL_SANDBOX_IMAGE") or HOST_IMAGE
        self.self_contained = image != HOST_IMAGE
        if self.self_contained:
            try:
                found = self.client.images.get(image)
            except NotFound:
                raise DockerUnavailable(f"the sandbox image {image} is not in the Docker engine; build it (CPU: "
                                        "`arrl image build`; CUDA: docker/sandbox) or pull it") \
                    from None
            except (DockerException, RequestException) as e:
                raise DockerUnavailable(f"the Docker engine did not answer about {image}: {e}") from None
            # containers run from the image id this sandbox resolved (a moved tag changes nothing mid-run);
            # outcomes record tag and id: what produced the number
            self.image = found.id
            self.image_ref = f"{image}@{found.id.split(':')[-1][:12]}"
        else:
            try:
                self.image = self.image_ref = images.build_host_sandbox(self.client)  # its tag is a content hash
            except images.ImageBuildError as e:
                raise DockerUnavailable(str(e)) from None
        self.labels = {LABEL: "1", **(labels or {})}
        self.isolation_eval = self.isolation
        self._containers: list = []
        self.sweep()

    def sweep(self) -> int:
        """Remove every container carrying this sandbox's labels (orphans of a dead worker)."""
        return remove_labelled(self.client, self.labels)

    def _host_mounts(self) -> dict:
        """The host-mount image's software: /usr, the loader cache, the interpreter's and the venv's prefixes."""
        vols = {"/usr": {"bind": "/usr", "mode": "ro"}}
        if os.path.exists("/etc/ld.so.cache"):
            vols["/etc/ld.so.cache"] = {"bind": "/etc/ld.so.cache", "mode": "ro"}
        for prefix in {sys.base_prefix, sys.prefix, str(Path(self.config.python).resolve().parent.parent)}:
            if not prefix.startswith("/usr"):
                vols[prefix] = {"bind": prefix, "mode": "ro"}
        return vols

    def _spawn(self, cmd, split, run_dir, work, writable, token, seed, **popen):
        if split != "train":
            return super()._spawn(cmd, split, run_dir, work, writable, token, seed, **popen)
        cfg = self.config
        env = self._env_vars(token, DATA_MOUNT, WORK_MOUNT, str(Path(ENV_MOUNT).parent), seed)
        env["HOME"], env["TMPDIR"] = WORK_MOUNT, "/tmp"
        if cfg.gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = "0"  # the container sees only the requested GPU
        os.chmod(work, 0o777)  # the container's user 65534 writes the model and progress here
        vols = {} if self.self_contained else self._host_mounts()
        vols[str(self.env_dir)] = {"bind": ENV_MOUNT, "mode": "ro"}
        vols[str(work)] = {"bind": WORK_MOUNT, "mode": "rw"}
        for item in self._data_items("train"):
            vols[str(item)] = {"bind": f"{DATA_MOUNT}/{item.name}", "mode": "ro"}
        if self.self_contained:
            cmd = [IMAGE_PYTHON, *cmd[1:]]  # cmd[0] is the host's interpreter (cfg.python)
        backstop = ["timeout", "-s", "KILL", str(int(cfg.budget_s + cfg.grace_s + 10))]
        devices = [DeviceRequest(device_ids=[str(cfg.gpu)], capabilities=[["gpu"]])] if cfg.gpu is not None else []
        labels = {**self.labels, "arrl.run_dir": str(run_dir)}
        mem = f"{cfg.memory_mb + 256}m"  # the host watchdog (memory_mb) acts first and names it oom
        try:
            ctr = self.client.containers.create(
                self.image, backstop + self._limits() + cmd, environment=env, volumes=vols,
                working_dir=WORK_MOUNT, network_mode="none", mem_limit=mem, memswap_limit=mem,
                pids_limit=cfg.max_procs + 8, read_only=True, tmpfs={"/tmp": "size=512m,mode=1777"},
                cap_drop=["ALL"], security_opt=["no-new-privileges"], user="65534:65534", init=True,
                labels=labels, device_requests=devices, hostname="arrl-sandbox", cpuset_cpus=cfg.cores or None)
        except DockerException as e:
            # the engine refused the container: remove anything it left under this run's label
            remove_labelled(self.client, {"arrl.run_dir": str(run_dir)})
            raise DockerUnavailable(f"the sandbox container did not start: {str(e)[:400]}") from None
        self._containers.append(ctr)  # removed after the run, whatever happens next
        try:
            return _Container(ctr, _start_attached(ctr))
        except (DockerException, RequestException) as e:  # e.g. no GPU driver; run() removes the container
            raise DockerUnavailable(f"the sandbox container did not start: {str(e)[:400]}") from None

    def run(self, source: str, run_dir: Path, seed: int = 0, env_hash: str = "", on_progress=None) -> Outcome:
        self._containers = []
        try:
            out = super().run(source, run_dir, seed, env_hash, on_progress)
            ctr = self._containers[-1] if self._containers else None
            if ctr is not None and out.status == "crash":
                ctr.reload()
                if ctr.attrs["State"].get("OOMKilled"):
                    out = dataclasses.replace(out, status="oom", message="killed by the container's memory limit")
            # the image is part of what produced the number: docker[<tag>@<id>]+<evaluator isolation>-eval
            return dataclasses.replace(out, isolation=f"docker[{self.image_ref}]+{self.isolation}-eval")
        finally:
            for ctr in self._containers:
                try:
                    ctr.remove(force=True)
                except (DockerException, RequestException):
                    pass
