"""cluster.yaml and cluster-onprem.yaml, validated offline the way `ray up` does it.

`prepare_config` fills in the provider's defaults (and, for `local`, turns the head and
worker IPs into node types); `validate_config` checks the result against the JSON schema
that ships inside ray. A raw file fails validate alone, so both steps are needed.
"""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def prepared(name: str) -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = yaml.safe_load((ROOT / name).read_text())
    cfg = prepare_config(copy.deepcopy(raw))
    validate_config(cfg)
    return cfg


def test_aws_cluster_validates_against_rays_schema():
    cfg = prepared("cluster.yaml")
    assert cfg["provider"]["type"] == "aws"
    types = cfg["available_node_types"]
    head = types[cfg["head_node_type"]]
    assert head["resources"].get("GPU") == 0  # no GPU actor lands on the head
    gpu_types = {k: v for k, v in types.items() if k != cfg["head_node_type"]}
    assert {"gpu_1x", "gpu_8x"} <= set(gpu_types)
    for t in gpu_types.values():
        assert t["min_workers"] == 0 and t["max_workers"] >= 1
    docker = cfg["docker"]
    assert "arrl-node" in docker["image"]
    assert "--gpus all" in docker["worker_run_options"]
    opts = " ".join(docker["run_options"])
    assert "/var/run/docker.sock:/var/run/docker.sock" in opts  # sibling experiment containers
    assert "-v /mnt/arrl:/mnt/arrl" in opts  # same path on host and in the node container
    assert "--pid=host" in opts  # the watchdog sees sibling containers' processes
    assert "ARRL_CLUSTER_NODE=1" in opts and "seccomp=unconfined" in opts  # bwrap for the evaluator
    assert cfg["idle_timeout_minutes"] > 0
    assert any("--metrics-export-port" in c for c in cfg["head_start_ray_commands"])
    # setup_commands are merged into both node kinds: the env copy reaches every node
    assert any("/mnt/arrl/env" in c for c in cfg["worker_setup_commands"])
    assert any("/mnt/arrl/env" in c for c in cfg["head_setup_commands"])


def test_onprem_cluster_validates_against_rays_schema():
    cfg = prepared("cluster-onprem.yaml")
    assert cfg["provider"]["type"] == "local"
    raw = yaml.safe_load((ROOT / "cluster-onprem.yaml").read_text())
    assert "available_node_types" not in raw and "head_node_type" not in raw  # local forbids them
    # the local provider makes one node type for all machines; every listed worker is started
    (node,) = cfg["available_node_types"].values()
    assert node["min_workers"] == node["max_workers"] == len(raw["provider"]["worker_ips"])
    assert "--gpus all" in cfg["docker"]["run_options"]


def test_validation_catches_a_broken_file():
    """The check can fail: an unknown field and a wrong type are both refused."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    bad = copy.deepcopy(raw)
    bad["idle_timeout_minutes"] = "soon"
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(bad))
    bad = copy.deepcopy(raw)
    bad["docker"]["gpus"] = "all"
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(bad))


def test_grafana_dashboard_charts_exactly_the_metrics_arrl_exports():
    import json
    import re

    from arrl.ops import metrics

    dash = json.loads((ROOT / "dashboards" / "grafana_arrl.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    charted = set(re.findall(r"ray_(arrl_\w+)", " ".join(exprs)))
    defined = set(re.findall(r'_make\("\w+", "(arrl_\w+)"', Path(metrics.__file__).read_text()))
    assert charted == defined, (charted ^ defined)
    assert all('run=~"$run"' in e for e in exprs)  # every panel follows the run selector
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
