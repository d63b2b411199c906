"""Real data sets (layer 7): Fashion-MNIST (IDX), sklearn digits."""
