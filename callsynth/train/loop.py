"""`callsynth train`: fit the expression CNN, then train the call generator with L_rec, L_att, L_id,
L_exp, L_adv and the cycle loss of FIG. 6A, with checkpoints, resume, a CSV log and sample grids."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

from ..face.basis import ExpressionBasis
from ..json_text import to_json
from ..model.chip import cut_chips
from ..model.expression import ExpressionCNN
from ..model.generator import Discriminator
from ..model.identity import DlibFaceEmbedder
from ..model.repairer import CallGenerator
from ..model.runtime import GENERATOR_FORMAT, export_generator
from . import losses
from .config import TrainConfig
from .stopping import StopAtStepEnd
from .pairs import build_pairs, build_portrait_pairs, merge_pairs

LOG_FIELDS = ["step", "seconds", "rec", "ssim", "att", "id", "exp", "adv", "cyc", "d", "total",
              "val_gain", "val_ssim", "val_ssim_warp", "val_l1", "val_l1_warp", "val_nme", "val_nme_warp",
              "val_ssim_full", "val_nme_full"]
# The repair gains validation tries (CallGenerator.gain); the chosen one ships with the weights.
REPAIR_GAINS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def pick_device(name: str) -> torch.device:
    """The config's device; ValueError in words for one torch does not know or this machine does not have
    (torch's own RuntimeError listed twenty device types, and its AssertionError said "Torch not compiled
    with CUDA enabled", each in a traceback)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device {name!r} is not one torch knows: auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r}: this torch sees no CUDA GPU (a CPU build, or no driver); use auto "
                         f"or cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {name!r}: no Apple GPU (MPS) here; use auto or cpu")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device {name!r}: training runs on auto, cpu, cuda, cuda:N or mps")
    return device


class Batches:
    """Random batches of the cached samples as tensors in [-1, 1]: `gt` and `warp` at full size, and
    their area-downsampled copies `gt_small`, `warp_small` at the generator's size. Portrait samples
    (arrays["portrait"]) are drawn with a total probability of `portrait_share` (None: like any other)."""

    def __init__(self, arrays: dict, device: torch.device, seed: int, size: int,
                 portrait_share: float | None = None):
        self.a, self.device, self.size = arrays, device, size
        self.rng = np.random.default_rng(seed)
        self.n = len(arrays["gt"])
        self.p = None
        portrait = arrays.get("portrait")
        if portrait_share is not None and portrait is not None and portrait.any() and not portrait.all():
            self.p = np.where(portrait, portrait_share / portrait.sum(), (1 - portrait_share) / (~portrait).sum())

    def draw(self, size: int) -> np.ndarray:
        """Indices of a random batch."""
        if self.p is None:
            return self.rng.integers(0, self.n, size)
        return self.rng.choice(self.n, size, p=self.p)

    @staticmethod
    def image(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(x).permute(0, 3, 1, 2).float() / 127.5 - 1

    def get(self, size: int, index: np.ndarray | None = None) -> dict:
        idx = self.draw(size) if index is None else index
        a, clip = self.a, self.a["clip"][idx]
        batch = {"gt": self.image(a["gt"][idx]), "warp": self.image(a["warp"][idx]),
                 "lmap": torch.from_numpy(a["lmap"][idx]).float()[:, None] / 127.5 - 1,
                 "code": torch.from_numpy(a["code"][idx]), "pose": torch.from_numpy(a["pose"][idx]),
                 "theta": torch.from_numpy(a["theta"][idx]), "still": self.image(a["stills"][clip]),
                 "still_theta": torch.from_numpy(a["still_thetas"][clip])}
        batch = {k: v.to(self.device) for k, v in batch.items()}
        for key in ("gt", "warp"):
            batch[f"{key}_small"] = F.interpolate(batch[key], size=(self.size, self.size), mode="area")
        return batch


def fit_expression_cnn(batches: Batches, k: int, steps: int, device, log=print) -> ExpressionCNN:
    net = ExpressionCNN(k).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in tqdm(range(steps), desc="expression CNN", disable=steps < 10):
        b = batches.get(32)
        loss = losses.expression(net(b["gt_small"]), b["code"])
        opt.zero_grad()
        loss.backward()
        opt.step()
    log(f"expression CNN: final batch MSE {float(loss.detach()):.4f}")
    net.eval().requires_grad_(False)
    return net


def save_grid(path: Path, batch: dict, output: torch.Tensor, n: int = 4) -> None:
    """Rows: warped still, generator output, ground truth."""
    import cv2

    def row(t):
        x = ((t[:n].detach().cpu().permute(0, 2, 3, 1).numpy() + 1) * 127.5).clip(0, 255).astype(np.uint8)
        return np.hstack(list(x))

    grid = np.vstack([row(batch["warp"]), row(output), row(batch["gt"])])
    cv2.imwrite(str(path), grid[:, :, ::-1])


class Trainer:
    def __init__(self, config: TrainConfig, basis: ExpressionBasis, log=print):
        self.config, self.basis, self.log = config, basis, log
        self.device = pick_device(config.device)
        torch.manual_seed(config.seed)
        self.out = Path(config.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.arrays = build_pairs(config, basis)
        if config.portrait_people:
            self.arrays = merge_pairs(self.arrays, build_portrait_pairs(config, basis))
        self.batches = Batches(self.arrays, self.device, config.seed, config.size, config.portrait_share)
        self.validation = None
        if config.val_every:
            from ..split import eval_clips

            self.validation = Batches(build_pairs(config, basis, clips=eval_clips()), self.device,
                                      config.seed, config.size)
        self.embedder = DlibFaceEmbedder().to(self.device)
        self.g = CallGenerator(basis.k, config.widths, config.blocks, config.size).to(self.device)
        self.d = Discriminator(3, 32, scales=2).to(self.device)
        self.opt_g = torch.optim.Adam(self.g.parameters(), lr=config.lr, betas=(0.5, 0.999))
        self.opt_d = torch.optim.Adam(self.d.parameters(), lr=config.lr, betas=(0.5, 0.999))
        self.step = 0
        self.best = float("-inf")          # the best validation SSIM gain over the warp so far
        self.repair_gain = 1.0             # the repair gain the last validation chose (shipped with G)
        self.tracker = None                # MediaPipe, for validation NME
        self._val_marks = None             # landmarks of the validation truths and warps, read once
        self.expression = None
        self.still_ids = self._embed_stills(self.arrays)
        self.val_ids = self._embed_stills(self.validation.a) if self.validation is not None else None

    @torch.no_grad()
    def _embed_stills(self, arrays: dict) -> torch.Tensor:
        stills = Batches.image(arrays["stills"]).to(self.device)
        thetas = torch.from_numpy(arrays["still_thetas"]).to(self.device)
        return torch.cat([self.embedder(cut_chips(stills[i:i + 32], thetas[i:i + 32]))
                          for i in range(0, len(stills), 32)])

    # --- checkpoints -------------------------------------------------------------------------------

    def checkpoint_path(self) -> Path:
        return self.out / "checkpoint.pt"

    def state(self) -> dict:
        """Everything a resume needs (export_generator keeps only the generator's part)."""
        return {"format": GENERATOR_FORMAT, "step": self.step, "basis": self.basis.name,
                "config": json.dumps(self.config.to_dict()), "g": self.g.state_dict(),
                "d": self.d.state_dict(), "exp": self.expression.state_dict(),
                "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(), "best": self.best,
                "repair_gain": self.repair_gain}

    def save(self, path: Path | None = None) -> Path:
        path = path or self.checkpoint_path()
        tmp = path.with_suffix(".tmp")
        torch.save(self.state(), tmp)
        tmp.replace(path)
        return path

    def resume(self, path: Path | None = None) -> bool:
        path = path or self.checkpoint_path()
        if not path.exists():
            return False
        state = torch.load(path, map_location=self.device, weights_only=True)
        if state.get("format") != GENERATOR_FORMAT or state.get("basis") != self.basis.name:
            raise ValueError(f"{path}: checkpoint of another format or basis")
        self.g.load_state_dict(state["g"])
        self.d.load_state_dict(state["d"])
        self.expression = ExpressionCNN(self.basis.k).to(self.device)
        self.expression.load_state_dict(state["exp"])
        self.expression.eval().requires_grad_(False)
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.step = int(state["step"])
        self.best = float(state.get("best", float("-inf")))
        self.repair_gain = float(state.get("repair_gain", 1.0))
        return True

    # --- one step ----------------------------------------------------------------------------------

    def generator_losses(self, b: dict, with_cycle: bool, with_id: bool = True
                         ) -> tuple[torch.Tensor, dict, torch.Tensor, torch.Tensor]:
        """L_rec and L_ssim on the full-size frame (what the caller sees); L_att, L_id, L_exp, L_adv and
        L_cyc on the generator's own size²."""
        w = self.config.weights
        z_id = b["z_id"]
        full, y, z_att = self.g.render(b["warp"], b["lmap"], z_id, b["code"], b["pose"])
        parts = {
            "rec": losses.reconstruction(full, b["gt"]),
            "ssim": losses.structure(full, b["gt"]),
            "att": losses.attribute(z_att, self.g.attributes(y, b["lmap"])),
            "exp": losses.expression(self.expression(y), b["code"]),
            "adv": losses.adversarial(self.d(y), real=True),
        }
        if with_id:
            parts["id"] = losses.identity(self.embedder(cut_chips(y, b["theta"])), z_id)
        if with_cycle:
            # FIG. 6A: give frame a the identity of another clip c, then back: a → c → a.
            other = torch.roll(z_id, 1, dims=0)
            y_ac, _ = self.g(b["warp_small"], b["lmap"], other, b["code"], b["pose"])
            y_aca, _ = self.g(y_ac, b["lmap"], z_id, b["code"], b["pose"])
            parts["cyc"] = losses.reconstruction(y_aca, b["gt_small"])
        total = sum(w.get(k, 0.0) * v for k, v in parts.items())
        return total, parts, y, full

    def learning_rate(self) -> float:
        """Constant, then (from lr_decay_start) linear decay to 5 % of it at the last step."""
        c = self.config
        if not c.lr_decay_start or self.step < c.lr_decay_start or c.steps <= c.lr_decay_start:
            return c.lr
        return c.lr * max(0.05, (c.steps - self.step) / (c.steps - c.lr_decay_start))

    def train_step(self, b: dict) -> dict:
        for opt in (self.opt_g, self.opt_d):
            for group in opt.param_groups:
                group["lr"] = self.learning_rate()
        with_cycle = self.step % self.config.cycle_every == 0
        with_id = self.step % self.config.id_every == 0
        total, parts, y, _ = self.generator_losses(b, with_cycle, with_id)
        self.opt_g.zero_grad()
        total.backward()
        self.opt_g.step()
        d_loss = losses.adversarial(self.d(b["gt_small"]), True) + \
            losses.adversarial(self.d(y.detach()), False)
        self.opt_d.zero_grad()
        d_loss.backward()
        self.opt_d.step()
        self.step += 1
        row = {k: float(v.detach()) for k, v in parts.items()}
        row.update(d=float(d_loss.detach()), total=float(total.detach()))
        return row

    def batch(self, size: int | None = None, index=None) -> dict:
        """A batch with the identity embedding of each sample's still (the receiver's cached z_id)."""
        if index is None:
            index = self.batches.draw(size or self.config.batch)
        b = self.batches.get(len(index), np.asarray(index))
        b["z_id"] = self.still_ids[torch.as_tensor(self.arrays["clip"][index], device=self.device)]
        return b

    def _landmarks(self, images: torch.Tensor) -> list:
        """MediaPipe landmarks of (B,3,H,W) images in [-1, 1], as the evaluator reads frames (None: no face)."""
        if self.tracker is None:
            from ..face.tracker import FaceTracker

            self.tracker = FaceTracker(video=False, smoothing=False)
        pixels = ((images.detach().cpu().permute(0, 2, 3, 1).numpy() + 1) * 127.5).round().clip(0, 255)
        return [self.tracker.process(np.ascontiguousarray(p.astype(np.uint8))).landmarks for p in pixels]

    @torch.no_grad()
    def validate(self, batch_size: int = 16, gains=REPAIR_GAINS) -> dict:
        """Full-size SSIM, L1 (0-255) and landmark NME (%) of the warp and of the generator at each repair
        gain on the validation identities' samples (NME over the samples where the truth, the warp and
        the output all show a face). The gain chosen is the one with the lowest NME among those that
        raise SSIM over the warp: SSIM gains hold at every gain, landmark error is the fragile figure."""
        from ..eval.metrics import nme

        v, ids = self.validation, self.val_ids
        first = self._val_marks is None
        marks = {"gt": [], "warp": []} if first else self._val_marks
        warp = {"ssim": 0.0, "l1": 0.0}
        per_gain = {g: {"ssim": 0.0, "l1": 0.0, "nme": [], "nme_warp": []} for g in gains}

        def add_pixel_scores(sums: dict, image: torch.Tensor, truth: torch.Tensor) -> None:
            """Sums over the batch of SSIM and of mean L1 on the 0-255 scale."""
            sums["ssim"] += float(losses.ssim(image, truth).sum())
            sums["l1"] += float((image - truth).abs().mean(dim=(1, 2, 3)).sum() * 127.5)

        self.g.eval()
        try:
            for start in range(0, v.n, batch_size):
                index = np.arange(start, min(v.n, start + batch_size))
                b = v.get(len(index), index)
                z_id = ids[torch.as_tensor(v.a["clip"][index], device=self.device)]
                add_pixel_scores(warp, b["warp"], b["gt"])
                if first:
                    marks["gt"] += self._landmarks(b["gt"])
                    marks["warp"] += self._landmarks(b["warp"])
                repair, _, _ = self.g.repair(b["warp"], b["lmap"], z_id, b["code"], b["pose"])  # once a batch
                for gain, sums in per_gain.items():
                    full = self.g.compose(b["warp"], repair, gain)
                    add_pixel_scores(sums, full, b["gt"])
                    for i, out in zip(index, self._landmarks(full)):
                        truth, warped = marks["gt"][i], marks["warp"][i]
                        if truth is not None and warped is not None and out is not None:
                            sums["nme"].append(nme(out, truth))
                            sums["nme_warp"].append(nme(warped, truth))
        finally:
            self.g.train()
        self._val_marks = marks
        mean = lambda xs: float(np.mean(xs)) if xs else float("nan")  # noqa: E731
        table = {g: {"ssim": s["ssim"] / v.n, "l1": s["l1"] / v.n, "nme": mean(s["nme"]),
                     "nme_warp": mean(s["nme_warp"])} for g, s in per_gain.items()}
        better = [g for g in gains if table[g]["ssim"] > warp["ssim"] / v.n]
        gain = min(better, key=lambda g: table[g]["nme"]) if better else \
            max(gains, key=lambda g: table[g]["ssim"])
        top = max(gains)
        return {"val_gain": gain, "val_ssim": table[gain]["ssim"], "val_ssim_warp": warp["ssim"] / v.n,
                "val_l1": table[gain]["l1"], "val_l1_warp": warp["l1"] / v.n, "val_nme": table[gain]["nme"],
                "val_nme_warp": table[gain]["nme_warp"], "val_ssim_full": table[top]["ssim"],
                "val_nme_full": table[top]["nme"], "per_gain": table}

    # --- the run -----------------------------------------------------------------------------------

    def run(self, resume: bool = True) -> Path:
        c = self.config
        if not (resume and self.resume()):
            self.expression = fit_expression_cnn(self.batches, self.basis.k, c.exp_steps, self.device,
                                                 self.log)
        (self.out / "config.json").write_text(json.dumps(c.to_dict(), indent=2) + "\n")
        log_path = self.out / "log.csv"
        new_log = not log_path.exists() or self.step == 0
        start = time.time()
        with open(log_path, "w" if new_log else "a", newline="") as fh:
            writer = csv.DictWriter(fh, LOG_FIELDS, extrasaction="ignore")
            if new_log:
                (self.out / "validation.jsonl").unlink(missing_ok=True)
                writer.writeheader()
            bar = tqdm(total=c.steps, initial=self.step, desc="training generator")
            try:
                self._steps(c, bar, writer, fh, start)
            except KeyboardInterrupt:   # Ctrl-C lost every step since the last checkpoint (500 by default)
                bar.close()
                fh.flush()
                self.log(f"interrupted at step {self.step} of {c.steps}: saved {self.save()}; the same command "
                         f"goes on from there")
                raise
            bar.close()
        return self.save()

    def _steps(self, c: TrainConfig, bar, writer, fh, start: float) -> None:
        """Train to c.steps, logging, validating, sampling and checkpointing as the config says."""
        with StopAtStepEnd() as stop:
            while self.step < c.steps:
                b = self.batch()
                row = self.train_step(b)
                bar.update(1)
                bar.set_postfix(rec=f"{row['rec']:.3f}", ssim=f"{row['ssim']:.3f}")
                if self.validation is not None and (self.step % c.val_every == 0 or self.step == c.steps):
                    scores = self.validate()
                    record = {"step": self.step, "warp": {k: scores[f"val_{k}_warp"] for k in ("ssim", "l1", "nme")},
                              "gains": {str(g): t for g, t in scores.pop("per_gain").items()}}
                    with open(self.out / "validation.jsonl", "a") as vh:  # every gain's figures
                        vh.write(to_json(record, indent=None) + "\n")
                    row.update(scores)
                    self.repair_gain = scores["val_gain"]
                    export_generator(self.state(), self.out / f"generator_{self.step:06d}.pt")  # each one
                    # best.pt: the largest SSIM gain over the warp among steps whose NME is no worse.
                    improvement = scores["val_ssim"] - scores["val_ssim_warp"]
                    if improvement > self.best and scores["val_nme"] <= scores["val_nme_warp"]:
                        self.best = improvement
                        self.save(self.out / "best.pt")
                    self.log(f"step {self.step}: validation SSIM {scores['val_ssim']:.4f} "
                             f"(warp {scores['val_ssim_warp']:.4f}), L1 {scores['val_l1']:.2f} "
                             f"(warp {scores['val_l1_warp']:.2f}), NME {scores['val_nme']:.3f} "
                             f"(warp {scores['val_nme_warp']:.3f}) at repair gain {scores['val_gain']:g}; "
                             f"at gain 1 SSIM {scores['val_ssim_full']:.4f}, NME {scores['val_nme_full']:.3f}")
                writer.writerow({"step": self.step, "seconds": round(time.time() - start, 1),
                                 **{k: round(v, 5) for k, v in row.items()}})
                if self.step % c.sample_every == 0 or self.step == c.steps:
                    with torch.no_grad():
                        full, _, _ = self.g.render(b["warp"], b["lmap"], b["z_id"], b["code"], b["pose"])
                    save_grid(self.out / f"samples_{self.step:06d}.png", b, full)
                if self.step % c.checkpoint_every == 0 or self.step == c.steps:
                    fh.flush()
                    self.save()
                if stop.asked:          # at the end of a whole step: the one saved is what was trained
                    raise KeyboardInterrupt
