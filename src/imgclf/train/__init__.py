"""Training: the epoch loop (fit), optimizer groups (optim), checkpoints (checkpoint)."""
