"""What a bundle of codes costs on a real clip: `python scripts/bundle_sizes.py CLIP` tracks up to 250
frames through the sender's FeatureEncoder and prints the mean packet size of bundles of 2-6 codes sampled
every 1-3 frames (callsynth.budget.CODE_CHANGE_BYTES is chosen from it), checking each round trip."""
import sys

import numpy as np

from callsynth.face.basis import load_basis
from callsynth.media import iter_frames, video_info
from callsynth.wire import Codec
from sender.features import FeatureEncoder
from sender.still_pick import pick_still

basis = load_basis()
path = sys.argv[1]
fps = video_info(path).fps
frames = list(iter_frames(path, max_frames=250))
still, _ = pick_still(frames[:60], basis)
enc = FeatureEncoder(basis, still, fps=fps, send_every=1, references=False)
codec = Codec(basis)
feats = []
for i, f in enumerate(frames):
    s = enc.process(f, int(i * 1000 / fps))
    ff = codec.decode(s.packet)
    if ff.has_face: feats.append(ff)
print(path, len(feats), "single", codec.packet_bytes)
for S in (1, 2, 3):
    for C in (2, 3, 4, 6):
        sizes = []
        sub = feats[::S]
        for j in range(0, len(sub) - C, C):
            pk = codec.encode_bundle(sub[j:j + C])
            got = codec.decode_all(pk)
            assert len(got) == C
            for a, b in zip(got, sub[j:j+C]):
                assert np.allclose(a.code, b.code, atol=1e-9), (a.code - b.code)
            sizes.append(len(pk))
        extra = (np.mean(sizes) - codec.packet_bytes) / (C - 1)
        print(f"sample 1/{S} codes {C}: mean {np.mean(sizes):.1f} bytes, per extra code {extra:.1f}")
