"""Sweeps and scaling: one result per point of a parameter, thread or device sweep, linked by a sweep record.

- :mod:`aibench.sweep.values` parses ``--values`` (lists and ``1:64:x2``-style ranges).
- :mod:`aibench.sweep.record` is the sweep record (``sweep-<id>.json``, contract 1), resume and the knee.
- :mod:`aibench.sweep.engine` runs the points: each one a :class:`~aibench.results.schema.Result` written as
  soon as it is measured, failures recorded and passed over, Ctrl-C keeping what was finished.
- :mod:`aibench.sweep.scaleout` scales inference out over worker processes driven by one load generator
  (the pool itself is a system under test: :mod:`aibench.sut.pool`).
- :mod:`aibench.sweep.launch` and :mod:`aibench.sweep.worker` run torch.distributed jobs through torchrun
  (DistributedDataParallel training, the all-reduce benchmark), on one machine or several.
- :mod:`aibench.sweep.cli` is the ``aibench sweep`` command.

Only ``values``, ``record`` and ``cli`` are imported by ``aibench sweep --help``; nothing here imports torch
at module level. See docs/sweep.md.
"""
