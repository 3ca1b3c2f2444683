"""What is measured: one module per benchmark family, each registering its benchmarks on import.

Modules here must not import torch at module level (``aibench list`` imports them all).
"""
