"""Where results are also sent ([track], docs/TRACKING.md): MLflow and W&B trackers and a webhook for
notifications. The ledger stays the record: items are derived from it (items, notices) and sent by an outbox
on a thread of its own (outbox), so a tracker never stops or slows the loop, and what one missed is sent
again from the ledger.

`check(cfg)` is the launch's one-line error for a tracker that cannot work; `outbox_for(cfg, root)` builds
the run's outbox, or None with no tracker configured.

Owns: what is sent where, and the record of what was delivered. May import: config, ledger; nothing in the
loop imports it (launch starts the outbox beside the driver, `arrl track` runs it alone).
"""

from __future__ import annotations

from pathlib import Path

from arrl.config import Config, ConfigError


def check(cfg: Config) -> None:
    """A one-line ConfigError for a tracker that cannot work; the MLflow URI made absolute (so `arrl track` and a
    resume from another folder reach the same store)."""
    t = cfg.track
    from arrl.track import mlflow_sink, wandb_sink, webhook

    if t.mlflow:
        t.mlflow = mlflow_sink.normalize_uri(t.mlflow)
    for field, value, why in (("mlflow", t.mlflow, lambda: mlflow_sink.check(t.mlflow)),
                              ("wandb", t.wandb, lambda: wandb_sink.check(t.wandb_mode)),
                              ("webhook", t.webhook, lambda: webhook.check(t.webhook))):
        if value:
            problem = why()
            if problem:
                raise ConfigError(f"[track] {field}: {problem}")


def wanted(cfg: Config) -> bool:
    """Whether the run sends anything anywhere."""
    return bool(cfg.track.mlflow or cfg.track.wandb or cfg.track.webhook)


def outbox_for(cfg: Config, root: Path, log=print, resolved: dict | None = None):
    """The run's outbox (not started), or None where no tracker is configured. `resolved` ({"section.field":
    value}, arrl.report.resolved): what the config's unset fields became, sent in their place."""
    from arrl.track.outbox import Outbox

    t, sinks = cfg.track, []
    if t.mlflow:
        from arrl.track.mlflow_sink import MlflowSink

        sinks.append(MlflowSink(t.mlflow, t.mlflow_experiment, cfg.name, t.timeout_s))
    if t.wandb:
        from arrl.track.wandb_sink import WandbSink

        sinks.append(WandbSink(t.wandb, t.wandb_mode, cfg.name, root, t.timeout_s))
    if t.webhook:
        from arrl.track.webhook import WebhookSink

        sinks.append(WebhookSink(t.webhook, cfg.name, t.timeout_s))
    if not sinks:
        return None
    sent = cfg.to_dict()
    for key, value in (resolved or {}).items():
        section, name = key.split(".", 1)
        if sent.get(section, {}).get(name) is None:
            sent[section][name] = value
    return Outbox(root, sent, sinks, t, log)
