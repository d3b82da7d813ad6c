"""Sweeps: read Hydra multirun folders back as a leaderboard (see leaderboard.py)."""
