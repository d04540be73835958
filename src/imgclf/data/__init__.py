"""Data stages: manifests → images → cache → loader (+ batch augmentation) → validation."""
