"""Training audio2exp on the clips with clean audio of people outside both validation sets."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from callsynth.face.basis import ExpressionBasis
from callsynth.face.regions import LIP_CENTRE
from callsynth.json_text import to_json
from callsynth.split import audio_training_files
from callsynth.train.stopping import StopAtStepEnd

from .backgrounds import with_backgrounds
from .dataset import Clip, blink_direction, build_dataset
from .features import N_MELS, RunningMean
from .model import (COLUMNS, CONTEXT, Audio2ExpModel, AudioToMouth, SILENCE_LOG_MEL, frame_index_at, windows_at)
from .options import TrainOptions
from .phones import PHONES, VISEME_OF_PHONE, VISEMES, phones_many
from .targets import MOUTH

# where a run stopped by Ctrl-C is kept; the same command (same --out, same options) goes on from it. Not
# named audio2exp-*.pt: in the shipped folder it would be taken for a model (model.default_model_path).
RESUME_FILE = "interrupted_audio2exp_run.pt"


def training_pairs(clips: list[Clip], start_mean: np.ndarray, std: np.ndarray, phones: dict | None = None):
    """(windows, codes, is GRID s1, phone windows) for every video frame with a tracked face, as the model
    sees them; the phone windows (the phone class under each frame of each window, audio2exp/phones.py)
    are None without `phones`."""
    pad = ((np.full(N_MELS, SILENCE_LOG_MEL) - start_mean) / std).astype(np.float32)
    xs, ys, s1, ph = [], [], [], []
    for clip in clips:
        mel_std = (RunningMean(start_mean).apply(clip.mel) / std).astype(np.float32)
        times = np.arange(len(clip.codes)) / clip.fps
        keep = clip.valid & (frame_index_at(times) < len(clip.mel))
        xs.append(windows_at(mel_std, frame_index_at(times[keep]), pad))
        ys.append(clip.codes[keep])
        s1.append(np.full(int(keep.sum()), "grid_s1" in clip.path))
        if phones is not None:
            labels = np.zeros(len(clip.mel) + 1, np.int64)   # the last one: silence outside the audio
            got = phones[clip.path][:len(clip.mel)]
            labels[:len(got)] = got
            ph.append(windows_at(labels[:-1, None], frame_index_at(times[keep]), labels[-1:])[..., 0])
    return (np.concatenate(xs), np.concatenate(ys), np.concatenate(s1),
            np.concatenate(ph).astype(np.int64) if phones is not None else None)


def speech_by_folder(clips: list[Clip]) -> dict:
    """{folder: {clips, minutes of tracked speech video}} of a training set (GRID s1 is one speaker)."""
    out: dict = {}
    for clip in clips:
        row = out.setdefault(Path(clip.path).parent.name, {"clips": 0, "minutes": 0.0})
        row["clips"] += 1
        row["minutes"] += float(clip.valid.sum()) / clip.fps / 60
    return {folder: {**row, "minutes": round(row["minutes"], 2)} for folder, row in sorted(out.items())}


def mouth_metric(basis: ExpressionBasis, gap_weight: float = 0.0) -> torch.Tensor:
    """G with dᵀGd = squared error of the mouth landmarks that code difference d makes, plus `gap_weight`
    times that of the lip gap (the inner lips' middle points, LIP_CENTRE, apart vertically)."""
    comps = basis.components.reshape(basis.k, -1, 3)
    mouth = comps[:, MOUTH, :].reshape(basis.k, -1)
    upper, lower = LIP_CENTRE
    gap = comps[:, lower, 1] - comps[:, upper, 1]
    return torch.from_numpy((mouth @ mouth.T + gap_weight * np.outer(gap, gap)).astype(np.float32))


def train(basis: ExpressionBasis, out_dir: Path, options: TrainOptions = TrainOptions(), log=tqdm.write) -> Path:
    epochs, batch, lr, seed = options.epochs, options.batch, options.lr, options.seed
    phone_weight = options.phone_weight
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    resume_path = Path(out_dir) / RESUME_FILE
    kept = _interrupted_run(resume_path, basis, options)       # before minutes of building: said at once
    paths = audio_training_files()
    if options.max_clips:
        paths = paths[:options.max_clips]
    clips = build_dataset(paths, basis)
    log(f"{len(clips)} training clips with audio and a tracked face")
    all_mel = np.concatenate([c.mel for c in clips])
    mean = all_mel.mean(0)
    std = np.concatenate([RunningMean(mean).apply(c.mel) for c in clips]).std(0) + 1e-3
    phones = phones_many([c.path for c in clips]) if phone_weight > 0 else None
    visemes = options.phone_set == "visemes"
    if phones is not None and visemes:
        phones = {path: VISEME_OF_PHONE[labels] for path, labels in phones.items()}
    x, y, is_s1, ph = training_pairs(clips, mean, std, phones)
    xn = None
    if options.background_share > 0:       # the same frames with sound under the voice (backgrounds.py)
        mels = [c.mel for c in clips]
        kinds = with_backgrounds(mels, [Path(c.path).parent.name for c in clips], rng, options.background_snr_db)
        xn = torch.from_numpy(training_pairs([replace(c, mel=m) for c, m in zip(clips, mels)], mean, std)[0])
        log(f"backgrounds under the voice: {', '.join(f'{k} {kinds.count(k)}' for k in sorted(set(kinds)))} "
            f"clips, {options.background_snr_db[0]:g}-{options.background_snr_db[1]:g} dB SNR, "
            f"{options.background_share:.0%} of windows")
    silence = ((np.full(N_MELS, SILENCE_LOG_MEL) - mean) / std).astype(np.float32)
    pool = np.concatenate([np.flatnonzero(is_s1)] + [np.flatnonzero(~is_s1)] * options.other_speakers_x)
    log(f"{len(x)} frames ({len(x) / 25 / 60:.0f} min of speech video)")
    net = AudioToMouth(basis.k, dropout=options.dropout, conv_dropout=options.conv_dropout)
    # the phone task's head reads the convolutions' columns; it is not saved (the call has no use for it)
    classes = len(VISEMES) if visemes else len(PHONES)
    phone_head = nn.Conv1d(net.net[-2].out_channels, classes, 1) if ph is not None else None
    params = list(net.parameters()) + (list(phone_head.parameters()) if phone_head is not None else [])
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=options.weight_decay)
    per_epoch = len(pool) // batch
    steps = epochs * per_epoch
    if steps == 0:
        raise ValueError(f"{len(pool)} training frames (other speakers drawn {options.other_speakers_x}x) are "
                         f"fewer than one batch of {batch}: use more clips")
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    learner = _Learner(net, phone_head, opt, sched, rng)
    metric = mouth_metric(basis, options.gap_weight)
    margin = (CONTEXT - COLUMNS) // 2
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    pt = torch.from_numpy(ph) if ph is not None else None
    gain_per_std = torch.from_numpy((np.log(10.0) / std).astype(np.float32))  # +1 in log-mel per x10 power
    history, first_epoch, first_i, order, total, elapsed = [], 0, 0, None, 0.0, 0.0
    if kept is not None:
        if kept.get("frames") != len(pool):
            raise ValueError(f"{resume_path} holds a run stopped at step {kept['step']} on {kept.get('frames')} "
                             f"training frames, and the clips give {len(pool)} now: remove it (or give another "
                             f"--out) to start again")
        learner.restore(kept)
        history, order, total, elapsed = list(kept["history"]), kept["order"], kept["total"], kept["seconds"]
        first_epoch, first_i = divmod(int(kept["step"]), per_epoch)
        if first_i == 0 and first_epoch > len(history):    # stopped after an epoch's last step
            first_epoch, first_i = first_epoch - 1, per_epoch
        log(f"going on from step {kept['step']} of {steps}, kept in {resume_path}")
    bar = tqdm(total=steps, initial=first_epoch * per_epoch + first_i, desc="training audio2exp")
    start = time.time() - elapsed
    with StopAtStepEnd() as stop:
        for epoch in range(first_epoch, epochs):
            if order is None:
                order, total = torch.from_numpy(rng.permutation(pool)), 0.0
            for i in range(first_i, per_epoch):
                idx = order[i * batch:(i + 1) * batch]
                xb, yb = xt[idx].clone(), yt[idx].clone()
                if xn is not None:
                    under = torch.rand(len(idx)) < options.background_share
                    xb[under] = xn[idx[under]]
                # the phone under each column the convolutions give (the window's inner COLUMNS)
                pb = pt[idx][:, margin:margin + COLUMNS].clone() if ph is not None else None
                # Microphones and rooms differ: a random gain and a random tilt of the bands per sample,
                # a few bands masked, a little noise.
                gain = torch.empty(len(xb), 1, 1).uniform_(-0.6, 0.6)
                xb += gain * gain_per_std + 0.3 * torch.randn(len(xb), 1, N_MELS)
                band = torch.randint(0, N_MELS - 6, (len(xb),))
                width = torch.randint(0, 6, (len(xb),))
                bands = torch.arange(N_MELS)[None, :]
                masked = (bands >= band[:, None]) & (bands < (band + width)[:, None])
                xb = torch.where(masked[:, None, :], torch.zeros(()), xb) + 0.1 * torch.randn_like(xb)
                # Some windows become silence or faint hiss, whose face is the closed, resting mouth.
                quiet = torch.rand(len(xb)) < 0.08
                level = torch.rand(int(quiet.sum()), 1, 1) * 0.6
                pad = torch.from_numpy(silence)
                xb[quiet] = pad * (1 - level) + 0.2 * torch.randn(int(quiet.sum()), xb.shape[1], N_MELS)
                yb[quiet] = 0
                columns = net.net(xb.transpose(1, 2))
                d = net.head(columns) - yb
                loss = torch.einsum("bi,ij,bj->b", d, metric, d).mean()
                if pb is not None:
                    pb[quiet] = 0
                    loss = loss + phone_weight * nn.functional.cross_entropy(phone_head(columns), pb)
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
                opt.step()
                sched.step()
                total += float(loss.detach())
                bar.update(1)
                if stop.asked:
                    bar.close()
                    step = epoch * per_epoch + i + 1
                    resume_path.parent.mkdir(parents=True, exist_ok=True)
                    torch.save({"basis": basis.name, "options": _as_saved(options), "frames": len(pool),
                                "step": step, "history": history, "order": order, "total": total,
                                "seconds": time.time() - start, **learner.state()}, resume_path)
                    log(f"interrupted at step {step} of {steps}: saved {resume_path}; the same command "
                        f"goes on from there")
                    raise KeyboardInterrupt
            first_i, order = 0, None
            history.append(total / per_epoch)
            bar.set_postfix(loss=f"{history[-1]:.5f}")
            log(f"pass {epoch + 1} of {epochs}: loss {history[-1]:.5f}")
    bar.close()
    model = Audio2ExpModel(net, mean.astype(np.float32), std.astype(np.float32), blink_direction(clips),
                           basis.name, {"clips": len(clips), "frames": len(x),
                                        "seconds": round(time.time() - start), **asdict(options)})
    path = model.save(out_dir)
    (out_dir / f"{path.stem}.json").write_text(to_json(
        {"model": path.name, "basis": basis.name, "options": asdict(options), "clips": len(clips),
         "frames": len(x), "speech_by_folder": speech_by_folder(clips),
         "loss_per_epoch": [round(v, 6) for v in history], "train_seconds": round(time.time() - start)},
        indent=2) + "\n")
    resume_path.unlink(missing_ok=True)
    return path


def _as_saved(options: TrainOptions) -> dict:
    """The options as a kept run records them (tuples as lists, as a load gives them back)."""
    return json.loads(json.dumps(asdict(options)))


def _interrupted_run(path: Path, basis: ExpressionBasis, options: TrainOptions) -> dict | None:
    """The run kept at `path` by a Ctrl-C, if one is there, checked to be this run stopped: the same basis
    and options (the frames are checked once built), or the steps trained would mix two recipes."""
    if not path.exists():
        return None
    try:
        kept = torch.load(path, map_location="cpu", weights_only=True)
        step, saved = int(kept["step"]), kept["options"]
    except Exception as exc:        # truncated or not ours: said with the file, not a traceback
        raise ValueError(f"{path}: not a run kept by Ctrl-C that can go on ({type(exc).__name__}: {exc}); "
                         f"remove it to start again") from None
    differ = [f"{k} {saved.get(k)!r} there, {v!r} here" for k, v in _as_saved(options).items() if saved.get(k) != v]
    if kept.get("basis") != basis.name:
        differ.insert(0, f"basis {kept.get('basis')} there, {basis.name} here")
    if differ:
        raise ValueError(f"{path} holds a run stopped at step {step} with other settings ({'; '.join(differ)}): "
                         f"give the same options to go on from it, or remove it (or give another --out) to "
                         f"start again")
    return kept


@dataclass
class _Learner:
    """What a training step changes, and so what a run kept by Ctrl-C holds besides where it stood: the
    networks, the optimiser and its schedule, and both random streams (the order and the augmentation)."""
    net: AudioToMouth
    phone_head: nn.Module | None
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    rng: np.random.Generator

    def state(self) -> dict:
        return {"net": self.net.state_dict(),
                "phone_head": self.phone_head.state_dict() if self.phone_head is not None else {},
                "opt": self.opt.state_dict(), "sched": self.sched.state_dict(),
                "numpy_rng": self.rng.bit_generator.state, "torch_rng": torch.get_rng_state()}

    def restore(self, kept: dict) -> None:
        self.net.load_state_dict(kept["net"])
        if self.phone_head is not None:
            self.phone_head.load_state_dict(kept["phone_head"])
        self.opt.load_state_dict(kept["opt"])
        self.sched.load_state_dict(kept["sched"])
        self.rng.bit_generator.state = kept["numpy_rng"]
        torch.set_rng_state(kept["torch_rng"])
