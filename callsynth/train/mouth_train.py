"""Training the mouth generator on samples the call's own path made (mouth_pairs.py), with the patent's
reconstruction terms (L1, the inner mouth weighted up, and 1 − SSIM) and attribute term L_att
(§0126–§0153), plus a teeth term: the share of teeth inside the inner lips against the truth's (an L1
alone is lowest for an interior darkened wherever teeth may or may not show). The adversarial term L_adv
(a PatchGAN that sees the patch and its inner-lip mask) is here but off by default: at weight 0.05 it
lowered the patch SSIM below the composed patch's at every validated step, on the selection and the
validation people alike (README). The identity term is left out at this patch size: dlib's descriptor
reads whole faces.

The kept step is chosen on the selection people (training identities held out of training,
`split.selection_files`): the one with the lowest error inside the inner mouth among those that beat the
composed patch (the warp with its analytic blend) there, lose no SSIM on the whole patch and keep the
teeth share as near the truth's (`wins`). The validation people's figures are logged beside, never used
to choose: `callsynth eval` measures them.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..face.basis import ExpressionBasis
from ..face.regions import OPEN_MOUTH, TEETH_S, TEETH_V
from ..json_text import to_json
from ..model.generator import Discriminator
from ..model.mouth_generator import MouthGenerator, open_weight, value_saturation
from ..model.runtime import MOUTH_FORMAT, half_weights
from . import losses
from .mouth_options import MouthTrainOptions


def tensors(data: dict, index) -> tuple[torch.Tensor, ...]:
    """(attributes, code, pose, present, truth, inner) of samples `index` as the network reads them."""
    picture = lambda key: torch.from_numpy(data[key][index]).float() / 127.5 - 1
    inner = torch.from_numpy(data["inner"][index]).float() / 255
    planes = torch.cat([picture("composed"), picture("plain"), inner[..., None] * 2 - 1], dim=3)
    return (planes.permute(0, 3, 1, 2).contiguous(), torch.from_numpy(data["code"][index]),
            torch.from_numpy(data["pose"][index]), torch.from_numpy(data["present"][index]).float(),
            picture("truth").permute(0, 3, 1, 2), inner[:, None])


def jitter(planes, truth, amount: float):
    """The same random colour change on every picture of a sample (the mask plane left alone)."""
    b = len(planes)
    gain = 1 + amount * (2 * torch.rand(b, 3, 1, 1) - 1)
    offset = 0.5 * amount * (2 * torch.rand(b, 3, 1, 1) - 1)
    change = lambda x: ((x + 1) * gain + 2 * offset - 1).clamp(-1, 1)
    return torch.cat([change(planes[:, :3]), change(planes[:, 3:6]), planes[:, 6:]], dim=1), change(truth)


def teeth(image: torch.Tensor, softness: float = 6.0) -> torch.Tensor:
    """A soft version of the evaluator's teeth pixels (HSV V > 150, S < 90) of images in [-1, 1]: (B,1,H,W)."""
    v, s = value_saturation(image)
    return torch.sigmoid((v - TEETH_V) / softness) * torch.sigmoid((TEETH_S - s) / softness)


def patch_loss(out, truth, inner, options: MouthTrainOptions):
    """L_rec (L1, the inner mouth weighted up, and 1 − SSIM) and the teeth share inside the inner lips: an
    L1 alone is lowest for a mouth darkened where teeth may or may not show, which the eye reads as no
    teeth; the share keeps as much of the inside bright as the truth shows."""
    weight = 1 + (options.inner_weight - 1) * inner
    rec = (weight * (out - truth).abs()).mean()
    area = inner.sum(dim=(1, 2, 3))
    shown = area > 8

    def share(x):
        return (teeth(x, options.teeth_softness) * inner).sum(dim=(1, 2, 3)) / area.clamp(min=1)

    tooth = ((share(out) - share(truth)).abs() * shown).sum() / shown.sum().clamp(min=1)
    return rec + options.ssim_weight * losses.structure(out, truth) + options.teeth_weight * tooth


@torch.inference_mode()
def validate(net: MouthGenerator, data: dict) -> dict:
    """On the open-mouth samples: the mean absolute error (0-255) inside the inner lips and the teeth share
    there (the evaluator's hard definition) of the output (as receivers show it: teeth kept, as far as the
    mouth is open), of the composed patch and of the truth; on all samples, the patch SSIM of the output
    and of the composed patch, and per clip the output's SSIM gain over the composed patch."""
    net.eval()
    sums = {k: 0.0 for k in ("err_out", "err_in", "teeth_out", "teeth_in", "teeth_truth")}
    pixels, ssims = 0.0, {"out": [], "in": []}     # per sample
    for start in range(0, len(data["truth"]), 256):
        index = np.arange(start, min(start + 256, len(data["truth"])))
        planes, code, pose, present, truth, inner = tensors(data, index)
        composed = planes[:, :3]
        weight = torch.from_numpy(open_weight(data["gap"][index]))[:, None, None, None]
        out = composed + weight * (net(planes, code, pose, present) - composed)
        mask = (inner > 0.5).float() * (torch.from_numpy(data["gap"][index]) >= OPEN_MOUTH).float()[:, None, None, None]
        pixels += float(mask.sum())
        for key, image in (("out", out), ("in", composed)):
            sums[f"err_{key}"] += float(((image - truth).abs().mean(1, keepdim=True) * mask).sum()) * 127.5
            sums[f"teeth_{key}"] += float(((teeth(image) > 0.5).float() * mask).sum())
        sums["teeth_truth"] += float(((teeth(truth) > 0.5).float() * mask).sum())
        ssims["out"].append(losses.ssim(out, truth).double().numpy())
        ssims["in"].append(losses.ssim(composed, truth).double().numpy())
    pixels = max(pixels, 1.0)
    clips = np.asarray(data["clip"])
    ssim_out, ssim_in = np.concatenate(ssims["out"]), np.concatenate(ssims["in"])
    net.train()
    return {"inner_l1": sums["err_out"] / pixels, "inner_l1_composed": sums["err_in"] / pixels,
            "teeth": sums["teeth_out"] / pixels, "teeth_composed": sums["teeth_in"] / pixels,
            "teeth_truth": sums["teeth_truth"] / pixels,
            "ssim": float(ssim_out.mean()), "ssim_composed": float(ssim_in.mean()),
            "ssim_gain_by_clip": [float((ssim_out - ssim_in)[clips == c].mean()) for c in np.unique(clips)]}


def wins(figures: dict) -> bool:
    """A step worth keeping: a lower inner-mouth error and no lower SSIM than the composed patch, and teeth
    no further from the truth's share than the composed patch's (or within 30 % of it). (`ssim_gain_by_clip`
    is logged, not used: asked of every selection clip, no step of a 2,000-step run kept it — two of the
    seven lost 0.4-1.6 % of patch SSIM at every step from 1,000 on; README.)"""
    off = abs(figures["teeth"] - figures["teeth_truth"])
    return (figures["inner_l1"] < figures["inner_l1_composed"] and figures["ssim"] >= figures["ssim_composed"]
            and off <= max(abs(figures["teeth_composed"] - figures["teeth_truth"]), 0.3 * figures["teeth_truth"]))


def train_mouth(data: dict, selection: dict, basis: ExpressionBasis, options: MouthTrainOptions, out_dir: Path,
                validation: dict | None = None, log=print) -> Path:
    """Train, measure on the selection people (and the validation people, logged only) every val_every
    steps, and write the step the selection chose as out_dir/mouth_generator.pt."""
    torch.manual_seed(options.seed)
    torch.set_num_threads(options.threads)
    rng = np.random.default_rng(options.seed)
    net = MouthGenerator(data["code"].shape[1], options.widths, options.blocks)
    opt = torch.optim.Adam(net.parameters(), lr=options.lr, betas=(0.5, 0.999))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=options.lr, total_steps=options.steps)
    # made even when L_adv is off: torch's random stream (the colour jitter) is then the same either way
    d = Discriminator(4, 32, scales=1)
    opt_d = torch.optim.Adam(d.parameters(), lr=options.lr, betas=(0.5, 0.999))
    open_idx = np.flatnonzero(data["gap"] >= OPEN_MOUTH)
    all_idx = np.arange(len(data["truth"]))
    n_open = int(round(options.batch * options.open_share)) if len(open_idx) else 0
    out_dir.mkdir(parents=True, exist_ok=True)
    history, best, best_state = [], None, None
    start = time.time()
    bar = tqdm(range(1, options.steps + 1), desc="training the mouth generator")
    running, step = 0.0, 0
    try:
        for step in bar:
            index = np.concatenate([rng.choice(open_idx, n_open),
                                    rng.choice(all_idx, options.batch - n_open)])
            planes, code, pose, present, truth, inner = tensors(data, index)
            if options.colour_jitter:
                planes, truth = jitter(planes, truth, options.colour_jitter)
            out = net.repaired(planes, code, pose, present)
            loss = patch_loss(out, truth, inner, options)
            if options.att_weight:
                as_input = torch.cat([out, planes[:, 3:]], dim=1)
                loss = loss + options.att_weight * losses.attribute([z.detach() for z in net.encode(planes)],
                                                                     net.encode(as_input))
            if options.adv_weight:
                loss = loss + options.adv_weight * losses.adversarial(d(_masked(out, inner)), real=True)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            if options.adv_weight:
                d_loss = (losses.adversarial(d(_masked(truth, inner)), True)
                          + losses.adversarial(d(_masked(out.detach(), inner)), False))
                opt_d.zero_grad()
                d_loss.backward()
                opt_d.step()
            value = loss.detach().item()
            running = 0.98 * running + 0.02 * value if step > 1 else value
            bar.set_postfix(loss=f"{running:.4f}")
            if step % options.val_every == 0 or step == options.steps:
                figures = validate(net, selection)
                figures.update(step=step, loss=round(running, 5))
                if validation is not None:
                    figures["validation"] = validate(net, validation)
                history.append(figures)
                if wins(figures) and (best is None or figures["inner_l1"] < best["inner_l1"]):
                    best = figures
                    best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
                log(json.dumps(_rounded(figures)))
    except KeyboardInterrupt:       # Ctrl-C: the step kept so far is not lost with the rest
        bar.close()
        if best_state is not None:
            path = _write(out_dir, basis, data, options, best, best_state, history, start, selection,
                          validation, interrupted_at=step)
            log(f"interrupted at step {step} of {options.steps}: the step kept so far ({best['step']}) "
                f"written to {path}")
        else:
            log(f"interrupted at step {step} of {options.steps}: no step had beaten the composed patch; "
                f"nothing written")
        raise
    bar.close()
    if best_state is None:
        raise RuntimeError("no step beat the composed patch on the selection people; nothing written")
    return _write(out_dir, basis, data, options, best, best_state, history, start, selection, validation)


def _write(out_dir: Path, basis: ExpressionBasis, data: dict, options: MouthTrainOptions, best: dict,
           best_state: dict, history: list, start: float, selection: dict, validation: dict | None,
           interrupted_at: int | None = None) -> Path:
    """The kept step in the format receivers load, and beside it what chose it."""
    path = out_dir / "mouth_generator.pt"
    torch.save({"format": MOUTH_FORMAT, "basis": basis.name, "code_dim": int(data["code"].shape[1]),
                "widths": list(options.widths), "blocks": list(options.blocks),
                "g": half_weights(best_state)}, path)
    (out_dir / "mouth_generator.json").write_text(to_json(
        {"options": asdict(options), "kept": best, "history": history, "train_seconds": round(time.time() - start),
         "samples": len(data["truth"]), "clips": len(data["names"]),
         "selection_clips": [str(n) for n in selection["names"]], "selection_samples": len(selection["truth"]),
         "validation_samples": len(validation["truth"]) if validation is not None else 0,
         "interrupted_at_step": interrupted_at}, indent=2) + "\n")
    return path


def _masked(image: torch.Tensor, inner: torch.Tensor) -> torch.Tensor:
    """What the discriminator sees: the patch and its inner-lip mask."""
    return torch.cat([image, inner * 2 - 1], dim=1)


def _rounded(figures: dict) -> dict:
    return {k: _rounded(v) if isinstance(v, dict) else round(v, 4) if isinstance(v, float) else v
            for k, v in figures.items()}
