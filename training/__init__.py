"""Headless training, data preprocessing and generation toolkit (run via training/run.py)."""
