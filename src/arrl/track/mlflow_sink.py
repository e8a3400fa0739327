"""The MLflow tracker ([track] mlflow = URI; the optional extra `arrl[mlflow]`): one MLflow run per arrl run,
found again by its `arrl.run` tag on a resume, in the experiment `[track] mlflow_experiment`. Stores: SQLite
(`sqlite:////abs/path/mlflow.db`, MLflow's recommended local store; artifacts in `mlartifacts/` beside it), a
server (`http://HOST:5000`), or the file store (`file:PATH`, which MLflow 3 keeps in maintenance mode).

  every experiment   a step (the experiment id) of the metrics val_bpb, reward, tokens_per_s, train_s, ok
                     (1 for status ok), and params exp.<id>.edit / .status / .kind / .parent;
                     its diff and learning curve as artifacts under experiments/<id>/
  test split         test_bpb at the incumbent run's step
  accepted edits     a tag accepted.<id> ("before -> after: edit") and accepted_bpb at its step
  adapter versions   learner/<figure> at step = the version (reward_mean, kl, clip fraction, ...)
  the run            the resolved config as params config.<section>.<field> and config.json; tags arrl.run,
                     arrl.target, arrl.env_hash

Opening reads back what the run holds (params, tags and every metric's history), so an item it holds whole is
never written again, and a half-written one (a driver killed mid-write) gets only its missing parts.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from urllib.parse import urlparse

from arrl.track.items import Item

SCHEMES = ("file", "sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks")
KINDS = ("config", "exp", "test", "accepted", "policy")


def normalize_uri(uri: str) -> str:
    """A tracking URI that means the same from any folder: a plain or relative path becomes an absolute file:
    URI, a relative SQLite path an absolute one (sqlite:////abs/path)."""
    u = urlparse(uri)
    if u.scheme in ("", "file") and not u.netloc:
        return Path(u.path or uri).expanduser().resolve().as_uri()
    if u.scheme == "sqlite" and u.path[1:] and not u.path.startswith("//"):
        return "sqlite:///" + str(Path(u.path[1:]).resolve())
    return uri


def check(uri: str) -> str | None:
    """Why `uri` cannot be used (one line), or None."""
    u = urlparse(uri)
    if u.scheme and u.scheme not in SCHEMES:
        return (f"{uri!r} is not a tracking URI this MLflow takes (file:PATH, sqlite:///PATH, http(s)://HOST:PORT, "
                f"or a path)")
    if u.scheme in ("http", "https") and not u.hostname:
        return f"{uri!r} names no host"
    try:
        import mlflow  # noqa: F401
    except ImportError:
        return "MLflow is not installed; pip install 'arrl[mlflow]'"
    if u.scheme in ("sqlite", "postgresql", "mysql", "mssql"):
        try:
            import alembic  # noqa: F401
            import sqlalchemy  # noqa: F401
        except ImportError:
            return f"a {u.scheme} store needs SQLAlchemy and Alembic; pip install 'arrl[mlflow]'"
    return None


class MlflowSink:
    name = "mlflow"
    kinds = KINDS

    def __init__(self, uri: str, experiment: str, run: str, timeout_s: float):
        self.uri, self.experiment, self.run, self.timeout_s = normalize_uri(uri), experiment, run, timeout_s
        self.client = None
        self.run_id: str | None = None
        self.have: set = set()  # (metric, step) pairs the run holds
        self.params: dict = {}
        self.tags: dict = {}

    def open(self, items: list[Item]) -> set[str]:
        scheme = urlparse(self.uri).scheme
        if scheme in ("http", "https"):
            # a server that is down fails fast; the outbox retries later, so MLflow's own retries only add waiting
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(max(1, round(self.timeout_s))))
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        elif scheme == "file":
            # MLflow 3 keeps the file store in maintenance mode behind this switch; a file: URI asks for it
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=self.uri)
        exp = self.client.get_experiment_by_name(self.experiment)
        exp_id = exp.experiment_id if exp else self.client.create_experiment(self.experiment, _artifacts(self.uri))
        found = self.client.search_runs([exp_id], filter_string=f"tags.`arrl.run` = '{self.run}'", max_results=2)
        if found:
            self.run_id = found[0].info.run_id
        else:
            self.run_id = self.client.create_run(exp_id, run_name=self.run, tags={"arrl.run": self.run}).info.run_id
        data = self.client.get_run(self.run_id).data
        self.params, self.tags = dict(data.params), dict(data.tags)
        self.have = {(k, m.step) for k in data.metrics for m in self.client.get_metric_history(self.run_id, k)}
        return {it.key for it in items if not any(self._missing(it))}

    def send(self, it: Item) -> None:
        from mlflow.entities import Metric, Param, RunTag

        for path, text in it.files.items():
            self.client.log_text(self.run_id, text, path)
        if it.config is not None:
            self.client.log_dict(self.run_id, it.config, "config.json")
        metrics, params, tags = self._missing(it)
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, it.step or 0) for k, v in metrics],
                              params=[Param(k, v) for k, v in params], tags=[RunTag(k, v) for k, v in tags])
        self.have.update((k, it.step or 0) for k, _ in metrics)
        self.params.update(params)
        self.tags.update(tags)

    def _missing(self, it: Item) -> tuple[list, list, list]:
        """The item's metrics, params and tags the run does not hold yet."""
        metrics = [(k, v) for k, v in it.metrics.items() if (k, it.step or 0) not in self.have]
        params = [(k, v) for k, v in _params(it).items() if self.params.get(k) != v]
        tags = [(k, v) for k, v in it.tags.items() if self.tags.get(k) != v]
        return metrics, params, tags

    def close(self, finished: bool) -> None:
        if self.run_id is not None:
            self.client.set_terminated(self.run_id, "FINISHED" if finished else "KILLED")


def _artifacts(uri: str) -> str | None:
    """Where a new experiment keeps its artifacts: beside a SQLite store's file (MLflow's default is ./mlruns
    in whatever folder the process runs in); the store's own choice for the others."""
    u = urlparse(uri)
    if u.scheme != "sqlite":
        return None
    return (Path(u.path[1:]).parent / "mlartifacts").resolve().as_uri()


def _params(it: Item) -> dict:
    if it.config is not None:  # [track] is where the run is sent, not what it did (and a resume may change it)
        return {f"config.{k}"[:250]: v for k, v in _flat({k: v for k, v in it.config.items() if k != "track"}).items()}
    if it.kind == "exp":
        return {f"exp.{it.step:06d}.{k}": v for k, v in it.texts.items()}
    return {}


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = str(v)[:500]
    return out
