"""The sending side of a call: capture, tracking, feature packets."""
