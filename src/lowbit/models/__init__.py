"""Small models (layer 7): ResNet-style CNN, MLP, ViT-style transformer."""
