"""Experiments: grids of training runs (grid.py) over a store of results keyed by config and
code (store.py, code.py). Builds on src.training; knows nothing about the paper's output."""
