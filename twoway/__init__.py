"""The two-way call: both parties send and receive over one peer connection (above sender and receiver)."""
