"""Flax modules only: they know nothing of losses, optimizers or devices."""
