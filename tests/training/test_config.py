import argparse
import json
from pathlib import Path

import pytest

from jobs import train as train_cmd
from pipelines.training.config import PAPER_LOSS_WEIGHTS, FlowOptions, TrainConfig, flag_of
from pipelines.training.models import parse_overrides, resolve_model
from pipelines.training.tasks import get_task


def parse(*argv):
    parser = argparse.ArgumentParser()
    train_cmd.add_arguments(parser)
    return train_cmd.config_from_args(parser.parse_args(list(argv)))


def test_cli_maps_onto_the_config():
    config = parse("--task", "mlm", "--data", "a.txt", "b.jsonl", "--eval-data", "c.txt", "--tiny",
                   "--model-config", "d_latents=64", "train_size=[32,48]", "hidden_act=gelu", "--max-steps", "7",
                   "--precision", "bf16", "--num-workers", "2", "--name", "run", "--flow-size", "24", "32",
                   "--init-scheme", "variance-scaling", "--flow-input-gain", "3",
                   "--flow-difference-units", "8", "--flow-difference-gain", "2")
    # relative paths are made absolute in the driver (Ray Train workers run in another directory)
    assert config.data == (str(Path("a.txt").absolute()), str(Path("b.jsonl").absolute()))
    assert config.eval_data == (str(Path("c.txt").absolute()),)
    assert config.model_config == {"d_latents": 64, "train_size": [32, 48], "hidden_act": "gelu"}
    assert (config.max_steps, config.precision, config.num_workers, config.flow.size) == (7, "bf16", 2, (24, 32))
    assert (config.init_scheme, config.flow.input_gain) == ("variance-scaling", 3.0)
    assert (config.flow.difference_units, config.flow.difference_gain) == (8, 2.0)
    assert config.video.loss_weights == PAPER_LOSS_WEIGHTS and config.augment
    assert parse("--task", "multimodal-autoencoding", "--data", "v", "--loss-weights", "image=1",
                 "--no-augment").video.loss_weights == {**PAPER_LOSS_WEIGHTS, "image": 1.0}
    assert TrainConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize("kwargs", [
    {"task": "nope", "data": ("x",)},
    {"task": "mlm"},  # no data
    {"task": "mlm", "data": ("x",), "precision": "fp16"},
    {"task": "mlm", "data": ("x",), "resume": True},  # resume needs a name
    {"task": "mlm", "data": ("x",), "max_steps": 0},  # evaluate-only needs --init-from and held-out data
    {"task": "mlm", "data": ("x",), "video": {"loss_weights": {"depth": 1.0}}},
    {"task": "mlm", "data": ("x",), "keep_checkpoints": 0},
    {"task": "mlm", "data": ("x",), "init_scheme": "xavier"},
    {"task": "optical-flow", "flow": {"difference_units": -1}},
    {"task": "mlm", "data": ("x",), "text": {"packing": "zip"}},
    {"task": "mlm", "data": ("x",), "preset": "nope"},  # unknown preset
    {"task": "image-classification", "data": ("x",), "preset": "language"},  # a preset the task cannot train
])
def test_invalid_configs_are_refused(kwargs):
    with pytest.raises(ValueError):
        TrainConfig(**kwargs)


def test_optical_flow_defaults_to_the_synthetic_generator():
    assert TrainConfig(task="optical-flow").synthetic_flow
    assert TrainConfig(task="optical-flow", data=("synthetic",)).synthetic_flow
    assert TrainConfig(task="mlm", data=("s3://bucket/x.txt",), init_from="~/m").data == ("s3://bucket/x.txt",)
    assert TrainConfig(task="mlm", data=("x",), init_from="~/m").init_from == str(Path.home() / "m")
    assert not TrainConfig(task="optical-flow", data=("chairs/",)).synthetic_flow


def test_output_paths_are_absolute():
    # workers run in another directory: the run directory (metrics.csv, final/) must not be relative
    relative = TrainConfig(task="optical-flow", output_dir="runs", name="r", export_dir="out")
    assert relative.output_dir == str(Path("runs").absolute()) and relative.export_dir == str(Path("out").absolute())


def test_parse_overrides():
    assert parse_overrides(["a=1", "b=[1, 2]", "c=x y", "d=null"]) == {"a": 1, "b": [1, 2], "c": "x y", "d": None}
    with pytest.raises(ValueError):
        parse_overrides(["no-equals"])


def test_resolve_model_applies_overrides_and_task_settings():
    config = TrainConfig(task="multimodal-autoencoding", data=("v",), tiny=True,
                         model_config={"num_frames": 2, "image_size": 16})
    head, model_config = resolve_model(config, get_task(config.task))
    assert head.__name__ == "PerceiverForMultimodalAutoencoding"
    assert model_config.output_shape == (1, 2, 16, 16)  # follows num_frames / image_size
    assert model_config.architectures == ["PerceiverForMultimodalAutoencoding"]
    with pytest.raises(ValueError, match="unknown model config"):
        resolve_model(TrainConfig(task="mlm", data=("x",), model_config={"nope": 1}), get_task("mlm"))


def test_attached_cluster_shortfall_is_named():
    from pipelines.training.trainer import cluster_shortfall

    two = TrainConfig(task="mlm", data=("x",), num_workers=2)
    assert cluster_shortfall(two, {"CPU": 3.0}) is None
    assert "leave none for Ray Data" in cluster_shortfall(two, {"CPU": 2.0})
    gpu = TrainConfig(task="mlm", data=("x",), num_workers=2, use_gpu=True)
    assert "1 GPU(s) for 2 GPU worker(s)" in cluster_shortfall(gpu, {"CPU": 8.0, "GPU": 1.0})
    assert cluster_shortfall(gpu, {"CPU": 8.0, "GPU": 2.0}) is None


def test_options_groups_round_trip_and_flat_run_json_of_earlier_versions():
    config = TrainConfig(task="optical-flow", flow={"size": [24, 32], "max_motion": 2.0}, image={"size": 48},
                         text={"column": "body"}, name="r")
    assert isinstance(config.flow, FlowOptions) and config.flow.size == (24, 32)
    record = json.loads(json.dumps(config.to_dict()))  # what run.json holds (tuples become lists)
    assert record["flow"]["size"] == [24, 32] and record["image"] == {"size": 48} and "flow_size" not in record
    assert TrainConfig.from_dict(record) == config
    # run.json of a run started before the split: flat option names and the retired fault-injection fields
    flat = {k: v for k, v in record.items() if k not in ("text", "image", "flow", "video")}
    flat.update({"flow_size": [24, 32], "flow_max_motion": 2.0, "image_size": 48, "text_column": "body",
                 "fail_at_step": None, "fail_mode": "raise"})
    assert TrainConfig.from_dict(flat) == config
    with pytest.raises(ValueError, match="unknown TrainConfig fields"):
        TrainConfig.from_dict({**record, "nonsense": 1})
    assert (flag_of("lr"), flag_of("flow.size"), flag_of("text.column"), flag_of("video.loss_weights")) == \
        ("--lr", "--flow-size", "--text-column", "--loss-weights")


def test_resume_policy_names_every_refused_flag_and_lets_max_steps_rise():
    from pipelines.training.resume import ResumeConflict, check_resume

    base = {"task": "mlm", "data": ("a.txt",), "name": "r", "max_steps": 10}
    recorded = TrainConfig(**base)
    assert check_resume(recorded, TrainConfig(**base, resume=True)) == []
    raised = TrainConfig(**{**base, "max_steps": 20}, resume=True, log_every=1, checkpoint_every=5,
                         export_dir="out", gradient_checkpointing=True)
    assert set(check_resume(recorded, raised)) == {"--max-steps", "--log-every", "--checkpoint-every",
                                                   "--export-dir", "--gradient-checkpointing"}
    changed = TrainConfig(**base, resume=True, lr=1e-3, batch_size=4, text={"seq_len": 64},
                          model_config={"d_latents": 64}, num_workers=2)
    with pytest.raises(ResumeConflict) as refused:
        check_resume(recorded, changed)
    message = str(refused.value)
    assert "\n" not in message
    for flag in ("--lr 0.0005 -> 0.001", "--batch-size 16 -> 4", "--seq-len null -> 64",
                 '--model-config {} -> {"d_latents": 64}', "--num-workers 1 -> 2"):
        assert flag in message, message
    assert "--max-steps 10" not in message
    with pytest.raises(ResumeConflict, match="--max-steps 10 -> 5"):  # lowering is refused
        check_resume(recorded, TrainConfig(**{**base, "max_steps": 5}, resume=True))
    with pytest.raises(ResumeConflict, match="--preset"):
        check_resume(recorded, TrainConfig(**base, resume=True, preset="language", tiny=True))
