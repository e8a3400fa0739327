"""The Docker engine as arrl uses it: one client, the label every sandbox container carries,
and removing the containers a run or a dead worker left behind."""

from __future__ import annotations

import os

import docker
from docker.errors import DockerException
from requests.exceptions import RequestException

LABEL = "arrl.sandbox"  # a Docker label, not a module path


class DockerUnavailable(RuntimeError):
    """No Docker engine answers, the sandbox image is missing or cannot be built, or a container cannot start."""


def client() -> docker.DockerClient:
    try:
        c = docker.DockerClient(base_url=os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock", timeout=60)
        c.ping()
        return c
    except (DockerException, RequestException) as e:
        raise DockerUnavailable(f"no Docker engine answers at {os.environ.get('DOCKER_HOST') or 'the default socket'}"
                                f" ({e}); start one with `bash scripts/dockerd.sh start` and export DOCKER_HOST") \
            from None


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


