"""The generator's training: a tiny config runs end to end, a step lowers the loss, checkpoints round-trip."""

import csv
import json
from pathlib import Path

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
    assert all(float(r["rec"]) > 0 and float(r["ssim"]) > 0 for r in rows)
    assert rows[0]["cyc"] != "" and (tmp_path / "samples_000002.png").exists()
    assert rows[0]["id"] != "" and rows[1]["id"] == ""          # id_every 2: L_id on steps 0, 2, ...
    # Validation on the evaluator's identities at step 3: the generator's and the warp's full-size SSIM.
    assert rows[0]["val_ssim"] == "" and 0 < float(rows[2]["val_ssim_warp"]) <= 1
    assert abs(float(rows[2]["val_ssim"]) - float(rows[2]["val_ssim_warp"])) < 0.05
    assert 0 < float(rows[2]["val_nme_warp"]) < 5 and float(rows[2]["val_nme"]) > 0
    assert (tmp_path / "generator_000003.pt").exists()      # every validated step, ready to load
    from callsynth.model.runtime import load_generator

    net, size = load_generator(tmp_path / "generator_000003.pt", load_basis())
    assert size == 32 and net.size == 32
    # The repair gain validation chose travels with the exported weights.
    from callsynth.train.loop import REPAIR_GAINS

    assert float(rows[2]["val_gain"]) in REPAIR_GAINS and net.gain == float(rows[2]["val_gain"])
    [record] = [json.loads(line) for line in open(tmp_path / "validation.jsonl")]
    assert record["step"] == 3 and set(record["gains"]) == {str(g) for g in REPAIR_GAINS}
    assert record["gains"][rows[2]["val_gain"]]["ssim"] == pytest.approx(float(rows[2]["val_ssim"]), abs=1e-5)
    assert json.loads((tmp_path / "config.json").read_text())["size"] == 32


def test_ctrl_c_saves_the_steps_trained_and_the_same_command_goes_on(tmp_path, ctrl_c_as_at_a_terminal):
    """Ctrl-C (a real SIGINT to a real `callsynth train`) lost every step since the last checkpoint, 500 by
    default (tens of minutes on a CPU); now the steps trained are saved as it stops, and the log says so."""
    import signal
    import subprocess
    import sys
    import time

    config = json.loads(Path("configs/tiny.json").read_text())
    config.update(steps=1000, sample_every=2, checkpoint_every=1000, val_every=0)
    (tmp_path / "c.json").write_text(json.dumps(config))
    out = tmp_path / "run"
    command = [sys.executable, "-m", "callsynth.cli", "train", "--config", str(tmp_path / "c.json"),
               "--out", str(out)]
    run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 300
        while not (out / "samples_000002.png").exists() and run.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        assert (out / "samples_000002.png").exists(), run.communicate(timeout=5)[0] if run.poll() is not None else ""
        run.send_signal(signal.SIGINT)
        said = run.communicate(timeout=120)[0]
    finally:
        run.kill()
    assert run.returncode == 130, said
    [line] = [x for x in said.splitlines() if x.startswith("interrupted at step ")]
    step = int(line.split()[3])
    assert 2 <= step < 1000 and f"of 1000: saved {out / 'checkpoint.pt'}; the same command goes on" in line
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == step
    assert [int(r["step"]) for r in csv.DictReader(open(out / "log.csv"))][:2] == [1, 2]


def test_training_steps_lower_the_loss_on_a_fixed_batch(tiny):
    trainer = Trainer(tiny, load_basis())
    trainer.expression = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(load_basis().k))
    trainer.expression(torch.zeros(1, 3, tiny.size, tiny.size))
    trainer.expression.requires_grad_(False)
    trainer.config.lr = 2e-3          # the repair starts at exactly zero: let it move within a few steps
    trainer.config.weights = {"rec": 10.0, "att": 1.0, "id": 2.0, "exp": 1.0}   # no GAN game here
    batch = trainer.batch(index=[0, 1])
    # The tiny clips' warps are already close to their frames; give the repair something to learn.
    for key in ("gt", "gt_small"):
        batch[key] = (batch[key.replace("gt", "warp")] * 0.8 + 0.1).clamp(-1, 1)
    first = trainer.generator_losses(batch, with_cycle=False)[0]
    for _ in range(20):
        trainer.train_step(batch)
    last = trainer.generator_losses(batch, with_cycle=False)[0]
    assert float(last.detach()) < 0.9 * float(first.detach())


def test_the_learning_rate_decays_linearly_from_its_start_step(tiny):
    trainer = Trainer(tiny, load_basis())
    trainer.config = TrainConfig(lr=1e-3, steps=100, lr_decay_start=60)
    rates = {}
    for step in (0, 59, 60, 80, 99, 100):
        trainer.step = step
        rates[step] = trainer.learning_rate()
    assert rates[0] == rates[59] == rates[60] == 1e-3
    assert rates[80] == pytest.approx(5e-4) and rates[99] == pytest.approx(5e-5) and rates[100] == 5e-5


def test_a_checkpoint_round_trips(tiny, tmp_path):
    basis = load_basis()
    trainer = Trainer(tiny, basis)
    assert trainer.arrays["portrait"].sum() == 2      # the tiny config's one London person, both ways
    trainer.run(resume=False)
    again = Trainer(tiny, basis)
    assert again.resume()
    assert again.step == trainer.step == tiny.steps
    for a, b in zip(trainer.g.state_dict().values(), again.g.state_dict().values()):
        assert torch.equal(a, b)
    batch = trainer.batch(index=[0])
    with torch.no_grad():
        y1 = trainer.g.eval().render(batch["warp"], batch["lmap"], batch["z_id"], batch["code"], batch["pose"])[0]
        y2 = again.g.eval().render(batch["warp"], batch["lmap"], batch["z_id"], batch["code"], batch["pose"])[0]
    assert torch.allclose(y1, y2)


def test_bad_configs_are_refused(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"size": 32, "widths": [8, 16], "blocks": [16, 3]}))
    with pytest.raises(ValueError, match="blocks must have"):
        TrainConfig.load(bad)
    bad.write_text(json.dumps({"sise": 32}))
    with pytest.raises(ValueError, match="unknown fields"):
        TrainConfig.load(bad)
    bad.write_text(json.dumps({"portrait_share": 1.0}))
    with pytest.raises(ValueError, match="portrait_share"):
        TrainConfig.load(bad)
    bad.write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        TrainConfig.load(bad)


@pytest.mark.parametrize("raw, said", [
    ([1, 2], "a config is a JSON object of fields (see configs/), not a list"),
    ({"steps": "many"}, 'steps must be an integer >= 1, not "many"'),
    ({"batch": 0}, "batch must be an integer >= 1, not 0"),
    ({"lr": -1e-4}, "lr must be a number > 0, not -0.0001"),
    ({"widths": [8, 16.5]}, "widths must be a list of integers >= 1, not [8, 16.5]"),
    ({"weights": {"rek": 10}}, "weights: unknown losses ['rek'] (known: rec, att, id, exp, adv, cyc, ssim)"),
    ({"weights": {"adv": -0.1}}, "weights.adv must be a number >= 0, not -0.1"),
    ({"out": 3}, "out must be a non-empty string, not 3"),
])
def test_a_config_field_of_the_wrong_kind_is_named_as_it_is_read(tmp_path, raw, said):
    """A field of the wrong kind or range was taken as it came: steps of "many" went through the making of
    the pairs and ended in a traceback (tqdm's TypeError), a list as the whole config said "unknown fields
    [1, 2]", and a misspelt loss weight was ignored (its loss left at 0 with the others)."""
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(raw))
    with pytest.raises(ValueError) as refused:
        TrainConfig.load(bad)
    assert str(refused.value) == f"{bad}: {said}"


@pytest.mark.parametrize("device, said", [
    ("gpu", "device 'gpu' is not one torch knows: auto, cpu, cuda, cuda:N or mps"),
    ("meta", "device 'meta': training runs on auto, cpu, cuda, cuda:N or mps"),
])
def test_a_device_torch_does_not_know_is_said_before_the_pairs(tmp_path, capsys, device, said):
    """torch's RuntimeError listing twenty device types, in a traceback."""
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"device": device}))
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "run")]) == 2
    assert f"callsynth train: error: {said}" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_cuda_where_torch_sees_none_is_said():
    """"Torch not compiled with CUDA enabled", an AssertionError in a traceback, on a CPU build."""
    from callsynth.train.loop import pick_device

    with pytest.raises(ValueError, match="this torch sees no CUDA GPU .* use auto or cpu"):
        pick_device("cuda:0")
    assert pick_device("auto").type == "cpu" and pick_device("cpu").type == "cpu"


def test_a_weight_a_config_does_not_name_keeps_its_default(tmp_path):
    """{"weights": {"adv": 0.2}} set the adversarial weight and turned every other loss off (the loop reads
    a missing weight as 0); a loss is off only where its weight says 0."""
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"weights": {"adv": 0.2, "cyc": 0}}))
    assert TrainConfig.load(config).weights == {**TrainConfig().weights, "adv": 0.2, "cyc": 0}
    for shipped in Path("configs").glob("*.json"):
        assert TrainConfig.load(shipped).weights == json.loads(shipped.read_text()).get("weights",
                                                                                         TrainConfig().weights)


def test_the_shipped_generator_loads_and_bad_files_are_refused(tmp_path):
    from callsynth.model.runtime import GeneratorModelError, load_generator

    basis = load_basis()
    net, size = load_generator(None, basis)
    assert size == 128 and not net.training and 0 < net.gain <= 1
    with pytest.raises(GeneratorModelError, match="no such generator"):
        load_generator(tmp_path / "missing.pt", basis)
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(GeneratorModelError, match="not a readable generator"):
        load_generator(broken, basis)
    # the mouth generator's file has the same format number: it ended in KeyError: 'config'
    from callsynth.model.runtime import default_mouth_path

    with pytest.raises(GeneratorModelError) as refused:
        load_generator(default_mouth_path(), basis)
    assert str(refused.value) == (f"{default_mouth_path()}: not a generator, a checkpoint of another kind "
                                  f"(it has no config)")


def test_the_ssim_loss_is_the_evaluators_ssim():
    """L_ssim is trained on the very figure `callsynth eval` reports (skimage's SSIM)."""
    import numpy as np

    from callsynth.eval.metrics import ssim as eval_ssim
    from callsynth.train.losses import ssim

    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (64, 48, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-40, 40, a.shape), 0, 255).astype(np.uint8)
    b[10:30, 5:25] = 255 - b[10:30, 5:25]
    t = lambda x: torch.from_numpy(x).permute(2, 0, 1)[None].double() / 127.5 - 1  # noqa: E731
    assert float(ssim(t(a), t(b))) == pytest.approx(eval_ssim(a, b), abs=1e-6)
    assert float(ssim(t(a), t(a))) == pytest.approx(1.0)
    # its windows' means from running sums are the 7×7 pool's, in one part or in several
    from torch.nn import functional as F

    from callsynth.train.losses import window_mean

    for shape in ((3, 3, 64, 48), (2, 3, 700, 800)):
        x = torch.from_numpy(rng.random(shape, dtype=np.float32) * 2 - 1)
        assert torch.allclose(window_mean(x, 7), F.avg_pool2d(x, 7, stride=1), atol=1e-6)


def test_the_receiver_runs_the_trained_path_and_a_zero_repair_keeps_the_warp():
    """`repaired` (eager, traced or by ONNX Runtime) is CallGenerator.render; with the untrained zero
    repair it returns the warp pixel for pixel, so a fresh model starts exactly at the warp."""
    import numpy as np

    from callsynth.face.pose import Pose
    from callsynth.model.repairer import CallGenerator
    from callsynth.model.runtime import onnx_full_frame, repaired, traced

    torch.manual_seed(0)
    net = CallGenerator(8, [8, 16], [16, 8, 3], size=32).eval()
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    landmarks = rng.uniform(0, 64, (478, 3))
    pose = Pose(np.zeros(3), np.zeros(3), 1.0)
    z_id, code = torch.randn(1, 128), np.zeros(8, np.float32)
    assert np.array_equal(repaired(net, image, landmarks, z_id, code, pose), image)
    torch.nn.init.normal_(net.g.blocks[-1].conv2.weight, std=0.05)
    eager = repaired(net, image, landmarks, z_id, code, pose)
    assert not np.array_equal(eager, image)
    script = repaired(net, image, landmarks, z_id, code, pose, traced(net, 64))
    assert np.abs(eager.astype(int) - script.astype(int)).max() <= 1
    for threads in (1, 2):
        onnx = repaired(net, image, landmarks, z_id, code, pose, onnx_full_frame(net, 64, threads))
        assert np.abs(eager.astype(int) - onnx.astype(int)).max() <= 1


def test_the_repair_gain_scales_the_repair_and_zero_keeps_the_warp():
    import numpy as np

    from callsynth.face.pose import Pose
    from callsynth.model.repairer import CallGenerator
    from callsynth.model.runtime import repaired

    torch.manual_seed(0)
    net = CallGenerator(8, [8, 16], [16, 8, 3], size=32).eval()
    torch.nn.init.normal_(net.g.blocks[-1].conv2.weight, std=0.05)
    rng = np.random.default_rng(2)
    image = rng.integers(60, 196, (64, 64, 3), dtype=np.uint8)   # away from 0 and 255: nothing clamps
    landmarks = rng.uniform(0, 64, (478, 3))
    pose = Pose(np.zeros(3), np.zeros(3), 1.0)
    z_id, code = torch.randn(1, 128), np.zeros(8, np.float32)
    full = repaired(net, image, landmarks, z_id, code, pose).astype(float) - image
    net.gain = 0.5
    half = repaired(net, image, landmarks, z_id, code, pose).astype(float) - image
    assert np.abs(full).max() > 4 and np.abs(half - full / 2).max() <= 1
    net.gain = 0.0
    assert np.array_equal(repaired(net, image, landmarks, z_id, code, pose), image)


def test_portrait_pairs_are_one_persons_neutral_and_smiling_pictures(data):
    from callsynth.split import portrait_pairs

    pairs = portrait_pairs(data)
    assert len(pairs) == 102
    for neutral, smiling in pairs:
        assert neutral.parent.name == "london_neutral" and smiling.parent.name == "london_smiling"
        assert neutral.name.split("_")[0] == smiling.name.split("_")[0] and neutral.exists() and smiling.exists()


def test_a_portrait_pair_gives_both_directions_with_opposite_codes(data, basis):
    """Neutral → smiling and smiling → neutral are the same change of expression, measured from either
    end: their codes point in opposite directions, and each sample's truth is the other picture."""
    import numpy as np

    from callsynth.split import portrait_pairs
    from callsynth.train.pairs import portrait_samples

    neutral, smiling = portrait_pairs(data)[0]
    there = portrait_samples(neutral, smiling, basis, 32)
    back = portrait_samples(smiling, neutral, basis, 32)
    for sample in (there, back):
        assert len(sample["samples"]["gt"]) == 1 and sample["samples"]["warp"][0].shape == (256, 256, 3)
        assert sample["still"].shape == (32, 32, 3)
    a, b = there["samples"]["code"][0], back["samples"]["code"][0]
    assert np.linalg.norm(a) > 0.5 and float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) < -0.5
    # The smile's truth differs from the neutral still's warp most at the mouth (teeth a warp cannot draw).
    gt, warp = (there["samples"][k][0].astype(float) for k in ("gt", "warp"))
    mouth = np.abs(gt - warp)[150:210, 90:166].mean()
    assert mouth > np.abs(gt - warp).mean()


def test_portrait_samples_are_drawn_at_their_share_of_each_batch():
    import numpy as np

    from callsynth.train.loop import Batches
    from callsynth.train.pairs import merge_pairs

    def arrays(samples, stills, value):
        a = {k: np.full((samples, 2), value, np.float32) for k in ("gt", "warp", "lmap", "code", "pose", "theta")}
        a.update(clip=np.arange(samples) % stills, stills=np.full((stills, 2), value), names=np.array(["x"] * stills),
                 still_thetas=np.zeros((stills, 2)))
        return a

    merged = merge_pairs(arrays(90, 3, 0), arrays(10, 5, 1))
    assert len(merged["gt"]) == 100 and len(merged["stills"]) == 8
    assert merged["portrait"].sum() == 10 and (merged["gt"][merged["portrait"]] == 1).all()
    # A portrait sample's clip index points at its own still, after the clips' stills.
    assert (merged["stills"][merged["clip"][merged["portrait"]]] == 1).all()
    assert (merged["stills"][merged["clip"][~merged["portrait"]]] == 0).all()
    draws = Batches(merged, "cpu", 0, 32, portrait_share=0.25).draw(20000)
    assert merged["portrait"][draws].mean() == pytest.approx(0.25, abs=0.02)
    assert merged["portrait"][Batches(merged, "cpu", 0, 32).draw(20000)].mean() == pytest.approx(0.1, abs=0.02)
