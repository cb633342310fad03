"""Training: `train(cfg)` / `train_batched(cfgs)` (run.py) over one Lightning loop (module.py,
steps.py, optim.py, batched.py); a run's record (record.py), status (status.py) and what happens
when it ends (callbacks.py). Knows nothing about grids, result stores or the paper's output."""
