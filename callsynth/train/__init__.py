"""Training the MC-AAD generator: data pairs from the call's own path, the patent's losses, the loop."""
