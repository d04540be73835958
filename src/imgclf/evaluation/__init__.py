"""Evaluation: metrics of a checkpoint on a split."""
