"""The evaluator: fidelity and bitrate of callsynth beside ordinary video codecs."""
