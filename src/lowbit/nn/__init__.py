"""Neural-network layer (layer 5): quantizers, QuantConfig, quantize_, checkpoints."""
