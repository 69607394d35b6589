"""cluster.yaml is checked offline with Ray's own launcher validation (no cloud calls)."""

import copy
from pathlib import Path

import pytest
import yaml

util = pytest.importorskip("ray.autoscaler._private.util")

CLUSTER_YAML = Path(__file__).resolve().parents[1] / "cluster.yaml"


def validated(config: dict) -> dict:
    """What `ray up` does before touching the cloud: fill defaults, merge commands, validate."""
    prepared = util.prepare_config(copy.deepcopy(config))
    util.validate_config(prepared)
    return prepared


@pytest.fixture(scope="module")
def config() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def gpu_types(config):
    return {name: t for name, t in config["available_node_types"].items()
            if t["resources"].get("GPU", 0) > 0}


def test_validates_with_ray(config):
    prepared = validated(config)
    assert prepared["provider"]["type"] == "aws"
    assert prepared["head_node_type"] in prepared["available_node_types"]


def test_head_runs_no_work(config):
    head = config["available_node_types"][config["head_node_type"]]
    assert head["resources"] == {"CPU": 0}


def test_gpu_workers_declared_and_scale_from_zero(config):
    gpus = gpu_types(config)
    assert gpus, "no worker type declares GPU resources"
    assert config["head_node_type"] not in gpus
    for name, node_type in gpus.items():
        assert node_type["min_workers"] == 0, name
        assert node_type["max_workers"] >= 1, name
        assert node_type["node_config"]["InstanceType"].startswith(("g", "p")), name
    assert sum(t.get("max_workers", 0) for t in config["available_node_types"].values()) \
        <= config["max_workers"]


def test_every_node_installs_the_project(config):
    prepared = validated(config)
    mounted = [remote for remote, local in config["file_mounts"].items() if local == "."]
    assert len(mounted) == 1
    for commands in (prepared["head_setup_commands"], prepared["worker_setup_commands"]):
        text = "\n".join(commands)
        assert f"pip install -e {mounted[0]}" in text
        assert "ray[default" in text
    assert ".venv" in config["rsync_exclude"]
    assert any("ray start --head" in c for c in config["head_start_ray_commands"])
    assert any("ray start --address" in c for c in config["worker_start_ray_commands"])


@pytest.mark.parametrize("mutate, message", [
    pytest.param(lambda c: c["available_node_types"]["gpu_a10g_x1"]["resources"].update(GPU=0.5),
                 "is not of type 'integer'", id="fractional-resource"),
    pytest.param(lambda c: c["available_node_types"]["gpu_a10g_x1"].update(gpus=1),
                 "'gpus' was unexpected", id="unknown-node-key"),
    pytest.param(lambda c: c.update(setup_command=[]), "'setup_command' was unexpected",
                 id="unknown-top-level-key"),
    pytest.param(lambda c: c.update(head_node_type="nope"), "must be one of", id="unknown-head-type"),
    pytest.param(lambda c: c["available_node_types"]["gpu_a10g_x1"].update(min_workers=99),
                 "smaller than the sum of `min_workers`", id="min-workers-over-cap"),
])
def test_broken_copies_fail_validation(config, mutate, message):
    jsonschema = pytest.importorskip("jsonschema")
    broken = copy.deepcopy(config)
    mutate(broken)
    with pytest.raises((jsonschema.ValidationError, ValueError), match=message):
        validated(broken)
