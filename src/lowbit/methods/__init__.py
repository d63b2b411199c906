"""Seed methods (layer 6): one subpackage per paper, each a recipe on layers 1-5."""
