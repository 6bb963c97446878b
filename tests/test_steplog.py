"""The step record: the columns the step writes are the ones the epoch's log reads."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from vaekit.config import Config, LossConfig, ModelConfig
from vaekit.models import VAE
from vaekit.training.adversary import build_adversary
from vaekit.training.distributed import Dist
from vaekit.training.objective import Noise, Objective
from vaekit.training.state import TrainState
from vaekit.training.step import Step, record_columns
from vaekit.training.steplog import StepLog


@pytest.mark.parametrize("adversarial", [False, True])
def test_a_steps_record_has_one_value_per_named_column(adversarial: bool) -> None:
    torch.manual_seed(0)
    config = Config(
        model=ModelConfig(arch="conv", channels=[4, 8], latent_dim=2),
        loss=LossConfig(adversarial_weight=0.5 if adversarial else 0.0, adversarial_layers=1),
    )
    model = VAE.from_config(config.model, (1, 8, 8))
    cpu = torch.device("cpu")
    adversary = build_adversary(config, model, cpu, "fp32", False)
    step = Step(model, config, cpu, "fp32", 10, Dist(), adversary)
    discriminator = adversary.discriminator if adversary is not None else None
    noise = Noise(torch.Generator().manual_seed(0))
    step.attach(Objective(model, config.loss, noise, None, discriminator))
    record = step(torch.rand(4, 1, 8, 8), None, 0)
    assert record is not None
    named = dict(zip(record_columns(adversarial), record.tolist(), strict=True))
    assert named["skipped"] == 0.0 and named["grad_norm"] > 0
    assert named["nelbo"] == pytest.approx(named["recon"] + named["kl"], rel=1e-5)
    if adversarial:  # on from step 0, the discriminator's update applied
        assert named["adv_on"] == 1.0 and named["disc_skipped"] == 0.0
        assert named["adv_weight"] >= 0 and named["disc_loss"] > 0


def test_the_epochs_means_read_each_column_by_its_name(tmp_path: Path) -> None:
    columns = record_columns(adversarial=True)
    rows = [  # a step, a skipped step, a step whose discriminator update was skipped
        {"nelbo": 3.0, "kl": 1.0, "grad_norm": 5.0, "adv_loss": 0.5, "disc_loss": 1.5},
        {"nelbo": 99.0, "skipped": 1.0, "adv_loss": 1.5, "disc_loss": 0.5},
        {"nelbo": 5.0, "kl": 3.0, "grad_norm": 7.0, "adv_loss": 9.0, "disc_skipped": 1.0},
    ]
    state = TrainState()
    log = StepLog(
        state,
        Dist(),
        max_skipped=10,
        run_dir=tmp_path,
        batch_size=1,
        take_back=lambda skipped: None,
        description="",
        total=len(rows),
        show=False,
        adversarial=True,
    )
    for row in rows:
        values = {"adv_on": 1.0, "adv_weight": 2.0, **row}
        log.add(torch.tensor([values.get(c, 0.0) for c in columns]))
        state.global_step += 1
    means = log.close()
    assert state.skipped_updates == 1 and means["disc_skipped_updates"] == 1
    assert means["train_nelbo"] == 4.0 and means["train_kl"] == 2.0  # the applied steps'
    assert means["train_grad_norm"] == 6.0 and means["train_recon"] == 0.0
    # the adversarial means: over the steps whose discriminator update was applied (its
    # own update: the VAE's skip does not skip it)
    assert means["train_adv_loss"] == 1.0 and means["train_disc_loss"] == 1.0
    assert means["train_adv_weight"] == 2.0 and not math.isnan(means["train_adv_weight"])
