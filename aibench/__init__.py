"""aibench: a benchmark harness for deep-learning systems in the MLPerf / AIBench tradition."""

__version__ = "0.1.0"
