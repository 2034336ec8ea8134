"""The runtime behind every front door: registry, runner, dynamic batcher, data plane."""
