"""The one real multi-worker run: two DDP workers on CPU, a worker killed while writing a checkpoint.

Checks (issues #6 and #8): the worker group restarts from the latest *complete* checkpoint with the step count
continuing (not from 0, not from the half-written one); the run finishes and reports a checkpoint; our
``from_pretrained`` of that checkpoint reproduces the trained model's outputs and transformers loads it too.
"""

from pathlib import Path

import pytest
import torch
from _faults import Fault, inject

from perceiver_core import PerceiverForMaskedLM
from pipelines.training.checkpointing import TrainerState, is_complete
from pipelines.training.config import TrainConfig
from pipelines.training.reporting import read_metrics_csv
from pipelines.training.tasks import get_task
from pipelines.training.trainer import fit

UDHR = Path(__file__).resolve().parents[1] / "data" / "text" / "udhr"


@pytest.mark.slow  # a long multi-worker run: `pytest -m slow` (CI runs it)
def test_two_workers_killed_mid_checkpoint_resume_and_checkpoint_loads(ray_session, tmp_path, monkeypatch):
    fault = Fault(step=4, mode="during-checkpoint", marker_dir=str(tmp_path / "faults"))
    inject(monkeypatch, fault)
    config = TrainConfig(task="mlm", data=(str(UDHR / "eng.txt"), str(UDHR / "fra.txt")), tiny=True, max_steps=6,
                         batch_size=4, log_every=1, checkpoint_every=2, warmup_steps=1, num_workers=2,
                         max_failures=1, output_dir=str(tmp_path), name="ddp")
    result = fit(config)

    # rank 0 died (os._exit) half-way through writing checkpoint 4: the restart resumed from checkpoint 2
    assert fault.marker.exists()
    assert result.start_step == 2 and result.step == 6
    rows = read_metrics_csv(Path(result.run_dir) / "metrics.csv")
    steps = [(r["attempt"], r["step"]) for r in rows if r["split"] == "train"]
    assert steps == [("1", "1"), ("1", "2"), ("1", "3"), ("1", "4"), ("2", "3"), ("2", "4"), ("2", "5"), ("2", "6")]

    # every checkpoint Ray registered is complete; the reported one is the last step's
    checkpoints = sorted(p for p in Path(result.run_dir).glob("checkpoint_*") if p.is_dir())
    assert checkpoints and all(is_complete(c) for c in checkpoints)
    assert Path(result.checkpoint_dir).name == "checkpoint_00000006"
    state = TrainerState.read(result.checkpoint_dir)
    assert (state.step, state.attempt) == (6, 2)

    # the checkpoint reproduces the trained model, in our implementation and in transformers'
    ours = PerceiverForMaskedLM.from_pretrained(result.checkpoint_dir)
    with torch.inference_mode():
        probe = get_task("mlm").probe(ours, ours.config)
    trained = torch.tensor(result.probe)
    assert torch.allclose(probe, trained, atol=1e-5)

    import pytest

    transformers = pytest.importorskip("transformers")
    theirs = transformers.PerceiverForMaskedLM.from_pretrained(result.checkpoint_dir).eval()
    g = torch.Generator().manual_seed(0)  # the probe input of MaskedLanguageModelling.probe
    ids = torch.randint(6, 262, (2, 32), generator=g)
    ids[:, ::5] = 3
    with torch.inference_mode():
        logits = theirs(inputs=ids).logits
    assert torch.allclose(logits, trained, atol=1e-4)
