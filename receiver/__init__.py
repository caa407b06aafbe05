"""The receiving side of a call: packet decoding, playout, frame rebuilding."""
