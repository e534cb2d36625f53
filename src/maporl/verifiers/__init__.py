"""Verifiers score every answer of every agent at every turn: a tensor (B, N, T) with values in [0, 1]."""
