"""Inference under MLPerf LoadGen: the system-under-test adapter, presets, and results from its logs."""
