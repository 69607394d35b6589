"""Fault injection for the training tests, kept out of the production code.

``inject(monkeypatch, Fault(...))`` replaces the function the driver hands to Ray Train
(``pipelines.training.trainer.train_loop_per_worker``) by ``faulty_loop``, bound to the fault. Ray Train ships
that function to its workers with cloudpickle; this module is registered to travel *by value*, so the
workers need no access to tests/. In each worker process ``faulty_loop`` wraps one step of
``pipelines.training.loop`` (the loop looks its steps up at call time) and runs the real loop:

* ``exit``: rank 0 dies (``os._exit``) right after optimizer step ``step``, before that step's report;
* ``during-checkpoint``: rank 0 dies while writing the checkpoint of ``step``, after the weights and before
  the optimizer state and ``trainer_state.json``: the moment a half-written checkpoint exists.

A marker file in ``marker_dir`` (a local folder; the test and the workers share the machine) makes the fault
fire once, so the restarted worker group runs through.
"""

from __future__ import annotations

import functools
import os
import sys
from dataclasses import dataclass
from pathlib import Path

MODES = ("exit", "during-checkpoint")


@dataclass(frozen=True)
class Fault:
    step: int
    mode: str
    marker_dir: str

    @property
    def marker(self) -> Path:
        return Path(self.marker_dir) / f"fault-injected-step-{self.step}"

    def fire(self) -> bool:
        """True the first time only (across worker processes and restarts)."""
        try:
            self.marker.parent.mkdir(parents=True, exist_ok=True)
            with open(self.marker, "x"):
                pass
        except FileExistsError:
            return False
        print(f"[fault injection] failing at step {self.step} ({self.mode})", flush=True)
        return True


def faulty_loop(fault: Fault, loop_config: dict) -> dict | None:
    """``train_loop_per_worker`` with ``fault`` wrapped around one of its steps (restored afterwards, for
    local mode, where the loop runs in the test's own process)."""
    from pipelines.training import loop

    original_step, original_write = loop.train_step, loop.write_checkpoint

    def train_step(session, batch):
        original_step(session, batch)
        if fault.mode == "exit" and session.trainee.state.step == fault.step and session.worker.chief \
                and fault.fire():
            os._exit(13)

    def write_checkpoint(directory, model, optimizer, scheduler, state):  # (rank 0 only)
        if fault.mode == "during-checkpoint" and state.step == fault.step and fault.fire():
            model.save_pretrained(directory)
            os._exit(17)
        return original_write(directory, model, optimizer, scheduler, state)

    loop.train_step, loop.write_checkpoint = train_step, write_checkpoint
    try:
        return loop.train_loop_per_worker(loop_config)
    finally:
        loop.train_step, loop.write_checkpoint = original_step, original_write


def inject(monkeypatch, fault: Fault) -> None:
    """Make the next ``fit`` in this test run its workers with ``fault``."""
    import ray.cloudpickle

    assert fault.mode in MODES, fault.mode
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    monkeypatch.setattr("pipelines.training.trainer.train_loop_per_worker", functools.partial(faulty_loop, fault))
