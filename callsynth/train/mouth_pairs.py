"""Training samples for the mouth generator, made by the call's own path: for a clip, the still is its
first frame; the sender's encoder tracks each frame, sends its code and picks reference stills as they
happen; the receiver's warp and reference blend compose the frame from what has arrived (a reference is
used from the frame after it was sent). Each sample is the mouth patch of that composed frame (before its
interior code, `drawn`, what the interior codebook is fitted on, and with it) and of the still warped
alone, the target's inner-lip mask, which mouth references had arrived, the code and pose,
and the real frame's patch as ground truth. Cached on disk, outside the repository."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..face.basis import ExpressionBasis, load_basis
from ..face.code import FaceCoder, MouthCue
from ..face.crop import CROP_SIZE
from ..face.interior_code import paint, shipped_codebook
from ..face.mouth_patch import MouthPatch
from ..face.reference_blend import ReferenceBlender
from ..face.still import NoFaceError, prepare_still
from ..face.warp import FaceWarper
from ..media import MediaError, iter_frames, video_info
from ..model.mouth_generator import READS, references_present
from ..model.runtime import pose_vector
from ..split import training_files
from ..tool_options import TOOLS
from ..wire import Codec, WireError, decode_identity
from .sample_cache import cache_path, load_cached, run_jobs, save_cached

MOUTH_PAIRS_FORMAT = 7      # 3: the code is followed by the gaze and the lip correction (K + 3); 4: the smile
                            # reference shows the caller's usual teeth (sender/reference_pick.py); 5: and the
                            # mouth source the sender names (K + 4, sender/mouth_choice.py); 6: the lips
                            # filtered less (tracker.LIP_BETA), stills' landmarks on the wire's grid; 7: the
                            # interior code (drawn: before it; the network reads the expression without it)
KEYS = ("composed", "drawn", "plain", "present", "inner", "truth", "code", "pose", "gap", "clip")


def mouth_samples(path: Path, basis: ExpressionBasis, max_frames: int, every: int) -> dict:
    """Every `every`-th frame (with a face) of a clip, as its mouth patches."""
    from sender.features import FeatureEncoder

    from ..face.regions import lip_gap

    frames = list(iter_frames(path, max_frames))
    still = prepare_still(frames[0], source=f"{path.name} first frame")
    fps = video_info(path).fps
    encoder = FeatureEncoder(basis, still, fps=fps, send_every=1, references=True)
    codec, coder = Codec(basis), FaceCoder(basis, still.landmarks)
    warper, blender = FaceWarper(still.image, still.landmarks), ReferenceBlender(still)
    out = {k: [] for k in KEYS[:-1]}
    try:
        for i, frame in enumerate(frames):
            sent = encoder.process(frame, int(round(i * 1000 / fps)))
            if sent.packet is not None and sent.found and i % every == 0:
                features = codec.decode(sent.packet)
                expression = features.expression
                target = coder.landmarks(features.pose, expression)
                base = warper.warp(target)
                patch = MouthPatch.at(target, CROP_SIZE)
                out["plain"].append(patch.cut(base))
                cue = coder.mouth_cue(expression)
                composed = blender.compose(base, target, MouthCue(cue.source))
                out["drawn"].append(patch.cut(composed))
                paint(composed, target, cue.interior)
                out["present"].append(references_present(blender.references))
                out["composed"].append(patch.cut(composed))
                out["inner"].append((patch.mask(target) * 255).astype(np.uint8))
                out["truth"].append(patch.cut(sent.crop))
                out["code"].append(expression[:basis.k + READS].astype(np.float32))
                out["pose"].append(pose_vector(features.pose))
                out["gap"].append(np.float32(lip_gap(target)))
            for message in sent.references:
                try:
                    ref = decode_identity(message, basis)
                except WireError:
                    continue
                blender.add(ref.index, ref.still)
    finally:
        encoder.close()
    return out


def _worker(job):
    path, max_frames, every = job
    try:
        return path, mouth_samples(Path(path), load_basis(), max_frames, every)
    except (MediaError, NoFaceError) as exc:
        return path, exc


def choose_clips(grid_s1: int, seed: int) -> list[Path]:
    """Every training clip of a person other than GRID's s1 (the selection people's among them: `held_out`
    takes them out of training), and `grid_s1` of s1's thousand."""
    files = training_files("video")
    rng = np.random.default_rng(seed)
    s1 = [f for f in files if f.parent.name == "grid_s1"]
    rest = [f for f in files if f.parent.name != "grid_s1"]
    return [s1[i] for i in sorted(rng.permutation(len(s1))[:grid_s1])] + rest


def build_mouth_pairs(clips: list[Path], basis: ExpressionBasis, max_frames: int, every: int,
                      workers: int = TOOLS.workers) -> dict:
    """All clips' samples as stacked arrays (`clip`: each sample's clip index, `names` the clips)."""
    codebook = shipped_codebook()
    cache = cache_path("mouth", [MOUTH_PAIRS_FORMAT, basis.name, codebook and codebook.tag, max_frames, every,
                                 [str(c) for c in clips]])
    arrays = load_cached(cache)
    if arrays is not None:
        print(f"mouth samples: {len(arrays['truth'])} of {len(arrays['names'])} clips, from {cache}")
        return arrays
    jobs = [(str(c), max_frames, every) for c in clips]
    results = run_jobs(_worker, jobs, workers, "mouth samples")
    merged = {k: [] for k in KEYS}
    names = []
    for name in [job[0] for job in jobs]:
        res = results.get(name)
        if res is None or isinstance(res, Exception) or not res["truth"]:
            continue
        for k in KEYS[:-1]:
            merged[k] += res[k]
        merged["clip"] += [len(names)] * len(res["truth"])
        names.append(name)
    if not names:
        raise ValueError("mouth samples: no usable clip")
    arrays = {k: np.stack(v) for k, v in merged.items()}
    arrays["names"] = np.array(names)
    save_cached(cache, arrays)
    print(f"mouth samples: {len(arrays['truth'])} of {len(names)} clips, cached in {cache}")
    return arrays


def held_out(arrays: dict, clips: list[Path]) -> tuple[dict, dict]:
    """(the samples of clips other than `clips`, the samples of `clips`): a selection set of training
    people kept out of training, cut from one cache."""
    wanted = {str(c) for c in clips}
    held_clip = np.array([str(n) in wanted for n in arrays["names"]])
    if not held_clip.any():
        raise ValueError("mouth samples: none of the selection clips is among the samples")
    keep = ~held_clip[arrays["clip"]]

    def part(mask, clip_mask):
        out = {k: arrays[k][mask] for k in KEYS}
        renumber = np.cumsum(clip_mask) - 1
        out["clip"] = renumber[out["clip"]]
        out["names"] = arrays["names"][clip_mask]
        return out

    return part(keep, ~held_clip), part(~keep, held_clip)
