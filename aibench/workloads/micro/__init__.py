"""Micro benchmarks: single operators from AIBench (12) and DeepBench (gemm, conv size lists)."""
