"""The sandboxes an experiment trains in, behind one protocol, and `make`, which picks one.

Owns: containment and measurement of one untrusted run (config.py: the settings and the paths a
run sees; process.py: bubblewrap or a plain process group; docker.py: a container, with engine.py
the Docker client and images.py the images; simulated.py: the synthetic target's scorer without a
process; watch.py and progress.py: watching a run from outside). Does not own: which experiment
runs where (the driver), the node's data (the worker), or the metric's code (env/).
May import: arrl.paths, arrl.target, arrl.ops, arrl.worker.outcome; nothing above the worker.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from arrl.worker.outcome import Outcome

BACKENDS = ("process", "docker", "simulated")


class Sandbox(Protocol):
    isolation: str  # how the run is contained: bwrap, none, docker or simulated (it goes into the outcome)

    def run(self, source: str, run_dir: Path, seed: int = 0, env_hash: str = "", on_progress=None) -> Outcome:
        """Train and evaluate `source` in a fresh `run_dir`."""

    def close(self) -> None:
        """Release what the sandbox holds (cores, clients)."""

    def sweep(self) -> int:
        """Remove what earlier runs of this sandbox left behind; returns how many things."""


def make(backend: str, env_dir: Path, data_dir: Path, config, *, catalog: tuple = (), labels: dict | None = None,
         image: str | None = None) -> Sandbox:
    """The sandbox of one backend. `config` is a SandboxConfig; `catalog` is what the simulated
    backend scores; `labels` and `image` are the Docker backend's."""
    if backend == "simulated":
        from arrl.worker.sandbox.simulated import SimulatedSandbox

        return SimulatedSandbox(catalog, config.budget_s)
    if backend == "process":
        from arrl.worker.sandbox.process import ProcessSandbox

        return ProcessSandbox(env_dir, data_dir, config)
    if backend == "docker":
        from arrl.worker.sandbox.docker import DockerSandbox

        return DockerSandbox(env_dir, data_dir, config, labels=labels, image=image)
    raise ValueError(f"unknown sandbox backend {backend!r} ({', '.join(BACKENDS)})")
