"""The generator's training: a tiny config runs end to end, a step lowers the loss, checkpoints round-trip."""

import csv
import json

import pytest
import torch

from callsynth.cli import main
from callsynth.face.basis import load_basis
from callsynth.train.config import TrainConfig
from callsynth.train.loop import Trainer


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    config = TrainConfig.load("configs/tiny.json")
    config.out = str(tmp_path_factory.mktemp("run"))
    return config


def test_the_tiny_config_trains_through_the_command_line(tmp_path):
    assert main(["train", "--config", "configs/tiny.json", "--out", str(tmp_path), "--restart"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "log.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    assert all(float(r["rec"]) > 0 and float(r["id"]) >= 0 for r in rows)
    assert rows[0]["cyc"] != "" and (tmp_path / "samples_000002.png").exists()
    assert json.loads((tmp_path / "config.json").read_text())["size"] == 32


def test_training_steps_lower_the_loss_on_a_fixed_batch(tiny):
    trainer = Trainer(tiny, load_basis())
    trainer.expression = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(load_basis().k))
    trainer.expression(torch.zeros(1, 3, tiny.size, tiny.size))
    trainer.expression.requires_grad_(False)
    for group in trainer.opt_g.param_groups:
        group["lr"] = 2e-3            # the repair starts at exactly zero: let it move within a few steps
    trainer.config.weights = {"rec": 10.0, "att": 1.0, "id": 2.0, "exp": 1.0}   # no GAN game here
    batch = trainer.batch(index=[0, 1])
    # The tiny clips' warps are already close to their frames; give the repair something to learn.
    batch["gt"] = (batch["warp"] * 0.8 + 0.1).clamp(-1, 1)
    first, _, _ = trainer.generator_losses(batch, with_cycle=False)
    for _ in range(20):
        trainer.train_step(batch)
    last, _, _ = trainer.generator_losses(batch, with_cycle=False)
    assert float(last) < 0.9 * float(first)


def test_a_checkpoint_round_trips(tiny, tmp_path):
    basis = load_basis()
    trainer = Trainer(tiny, basis)
    trainer.run(resume=False)
    again = Trainer(tiny, basis)
    assert again.resume()
    assert again.step == trainer.step == tiny.steps
    for a, b in zip(trainer.g.state_dict().values(), again.g.state_dict().values()):
        assert torch.equal(a, b)
    batch = trainer.batch(index=[0])
    with torch.no_grad():
        y1, _ = trainer.g.eval()(batch["warp"], batch["lmap"], batch["z_id"], batch["code"], batch["pose"])
        y2, _ = again.g.eval()(batch["warp"], batch["lmap"], batch["z_id"], batch["code"], batch["pose"])
    assert torch.allclose(y1, y2)


def test_bad_configs_are_refused(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"size": 32, "widths": [8, 16], "blocks": [16, 3]}))
    with pytest.raises(ValueError, match="blocks must have"):
        TrainConfig.load(bad)
    bad.write_text(json.dumps({"sise": 32}))
    with pytest.raises(ValueError, match="unknown fields"):
        TrainConfig.load(bad)
    bad.write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        TrainConfig.load(bad)


def test_the_shipped_generator_loads_and_bad_files_are_refused(tmp_path):
    from receiver.generator_renderer import GeneratorModelError, load_generator

    basis = load_basis()
    net, size = load_generator(None, basis)
    assert size == 128 and not net.training
    with pytest.raises(GeneratorModelError, match="no such generator"):
        load_generator(tmp_path / "missing.pt", basis)
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(GeneratorModelError, match="not a readable generator"):
        load_generator(broken, basis)
