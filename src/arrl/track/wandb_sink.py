"""The Weights & Biases tracker ([track] wandb = PROJECT; the optional extra `arrl[wandb]`): one W&B run per arrl
run, its id derived from the run's name, written under runs/<name>/wandb/. Offline (the default) it needs no
account, and `wandb sync runs/<name>/wandb/offline-run-*` uploads it later; online needs an API key.

  every experiment   a row on the `experiment` axis: val_bpb, reward, tokens_per_s, train_s, ok, and the edit,
                     status, kind and parent as text; its diff and curve as files under experiments/<id>/
  test split         test_bpb on the `experiment` axis
  accepted edits     a tag accepted.<id>, and accepted_bpb on the `experiment` axis
  adapter versions   learner/<figure> on the `adapter_version` axis
  the run            the resolved config (with arrl.env_hash) as the run's config
Every row carries `arrl/key`, the item it is; opening reads the run's files (arrl.track.wandb_files) and
finds which rows they hold, so rows W&B never wrote (its writer is asynchronous; a killed run loses its last
ones) are logged again and none is logged twice.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from arrl.track import wandb_files
from arrl.track.items import Item

KINDS = ("config", "exp", "test", "accepted", "policy")
KEY = "arrl/key"


def run_id(run: str) -> str:
    return "arrl-" + re.sub(r"[^A-Za-z0-9_-]", "-", run)[:58]


def check(mode: str) -> str | None:
    """Why W&B cannot be used (one line), or None."""
    try:
        import wandb  # noqa: F401
    except ImportError:
        return "W&B is not installed; pip install 'arrl[wandb]'"
    if mode == "online" and not os.environ.get("WANDB_API_KEY") and not _netrc_has_key():
        return ("online mode needs an API key: set WANDB_API_KEY or run `wandb login` (or use wandb_mode = "
                "'offline' and `wandb sync` later)")
    return None


def _netrc_has_key() -> bool:
    import netrc

    host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1].split("/")[0]
    try:
        return netrc.netrc(os.environ.get("NETRC") or None).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


class WandbSink:
    name = "wandb"
    kinds = KINDS

    def __init__(self, project: str, mode: str, run: str, root: Path, timeout_s: float):
        self.project, self.mode, self.run, self.root, self.timeout_s = project, mode, run, Path(root), timeout_s
        self.id = run_id(run)
        self.wb = None
        self.axes: dict = {}  # metric -> the axis it was defined on

    def open(self, items: list[Item]) -> set[str]:
        import wandb

        self._finish()  # reopened after a failure: what the old run still had in hand is written first
        held = {r[KEY] for r in wandb_files.history(self.root, self.id) if isinstance(r.get(KEY), str)}
        settings = wandb.Settings(console="off", x_disable_stats=True, x_disable_meta=True,
                                  x_disable_machine_info=True, disable_git=True, save_code=False,
                                  x_save_requirements=False, silent=True, init_timeout=max(30.0, self.timeout_s))
        self.wb = wandb.init(project=self.project, id=self.id, name=self.run, resume="allow", mode=self.mode,
                             dir=str(self.root), settings=settings, reinit="create_new")
        for axis in ("experiment", "adapter_version"):
            self.wb.define_metric(axis)
        self.axes = {}
        return held

    def send(self, it: Item) -> None:
        wb = self.wb
        if it.config is not None:
            wb.config.update({**it.config, **{k: v for k, v in it.tags.items() if k != "arrl.run"}},
                             allow_val_change=True)
            return
        for path, text in it.files.items():
            f = Path(wb.dir) / path
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(text)
            wb.save(str(f), base_path=wb.dir, policy="now")
        if it.tags:
            wb.tags = tuple(sorted(set(wb.tags or ()) | {k[:64] for k in it.tags}))
        for k in it.metrics:
            if self.axes.get(k) != it.axis:
                wb.define_metric(k, step_metric=it.axis)
                self.axes[k] = it.axis
        wb.log({it.axis: it.step, **it.metrics, **it.texts, KEY: it.key})

    def close(self, finished: bool) -> None:
        self._finish(0 if finished else 1)

    def _finish(self, code: int = 0) -> None:
        if self.wb is not None:
            wb, self.wb = self.wb, None
            try:
                wb.finish(exit_code=code)
            except Exception:  # noqa: BLE001 - a run whose service died is gone; its files are what it wrote
                pass
