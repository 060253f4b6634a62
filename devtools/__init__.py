"""Development helpers shared by `tests/` and `benchmarks/` (not part of the installed product: train.py and the
model never import them)."""
