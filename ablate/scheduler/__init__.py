"""Scheduling, Hydra's split: what to run (`plan`, the sweeps in sweep.py and search.py) apart from where it
runs (`worker`: claim, supervise, OOM retry; `cell`: the cell process; `local`: `ablate run`; `queue`).

Submodules are imported where used (the CLI path stays light); this package re-exports nothing heavy.
"""
