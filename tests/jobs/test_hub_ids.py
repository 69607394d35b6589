"""``--model`` (batch jobs) and ``--init-from`` (training) take Hugging Face hub ids, served from a cache the
test builds (offline). No Ray: the jobs are validated and built, the training model is resolved and loaded."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from jobs.cli import build_parser, main
from perceiver_core import PerceiverForImageClassificationFourier, PerceiverForMaskedLM, presets

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "perceiver_core"))
from _hub_cache import add_snapshot  # noqa: E402

IMAGE = Path(__file__).resolve().parents[1] / "data" / "images" / "natural" / "astronaut.png"


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """owner/vision (a tiny image classifier) and owner/language (a tiny MLM) in an offline HF_HUB_CACHE."""
    cache = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    models = {}
    for repo, name in (("owner/vision", "vision-fourier"), ("owner/language", "language")):
        torch.manual_seed(0)
        models[repo] = presets.build(name, tiny=True).eval()
        models[repo].save_pretrained(tmp_path / name)
        add_snapshot(cache, repo, tmp_path / name)
    return models


def test_batch_job_model_by_hub_id(hub_cache, tmp_path):
    from jobs.images import build_job, config_from_args

    args = build_parser().parse_args(["images", "--input", str(IMAGE), "--output", str(tmp_path / "out"),
                                      "--model", "owner/vision", "--no-progress"])
    job = build_job(config_from_args(args))  # validates the model on the driver, as a real run does
    assert job.model.source == "owner/vision"
    model = job.model.load()  # what every worker does
    assert isinstance(model, PerceiverForImageClassificationFourier)
    assert torch.equal(model.perceiver.encoder.latents, hub_cache["owner/vision"].perceiver.encoder.latents)


def test_batch_job_with_an_uncached_hub_id_fails_by_name(hub_cache, tmp_path, capsys):
    assert main(["images", "--input", str(IMAGE), "--output", str(tmp_path / "out"), "--model", "owner/absent"]) == 2
    err = capsys.readouterr().err
    assert "owner/absent" in err and "not in the Hugging Face cache" in err


def test_training_init_from_hub_id(hub_cache, tmp_path):
    from pipelines.training.config import TrainConfig
    from pipelines.training.models import build_model, resolve_model
    from pipelines.training.tasks import get_task

    (tmp_path / "train.txt").write_text("some text\n")
    config = TrainConfig(task="mlm", tiny=True, init_from="owner/language", data=(str(tmp_path / "train.txt"),))
    assert config.init_from == "owner/language"  # not made into a local path
    head, model_config = resolve_model(config, get_task("mlm"))
    model = build_model(config, head, model_config)
    assert isinstance(model, PerceiverForMaskedLM)
    expected = hub_cache["owner/language"].state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in model.state_dict().items())
