"""Experiments: absl entry points run as ``python -m experiments.NAME --flagfile=...``."""
