"""Neurosurgeon (Kang et al., ASPLOS 2017) in aibench: where to cut a network between a weak device and a
strong server, from per-layer predictions.

* :mod:`~aibench.partition.layers` — what kind of layer each layer of a network is, and the variables the
  prediction models use (the paper's §5.1: feature-map sizes, filters, inputs and outputs, neurons).
* :mod:`~aibench.partition.sides` — a *side* is a real, measured configuration (device, threads, dtype, an
  optional cgroup CPU quota): ``device`` (one thread by default) and ``server`` (every core, or CUDA).
* :mod:`~aibench.partition.profile` — ``aibench partition profile``: every layer of a registered network
  timed on one side; per-layer distributions in ``parts.layer`` of a result file.
* :mod:`~aibench.partition.models` — ``aibench partition fit``: one regression per layer type, fitted on a
  sweep of layer configurations that excludes the networks being predicted; a JSON platform profile.
* :mod:`~aibench.partition.decide` — ``aibench partition choose``: every cut j = 0..N priced from the
  predictions (Algorithm 1, with the corrections in docs/partition.md), links, energy.
* :mod:`~aibench.partition.link` — a token-bucket shaped link over loopback TCP (bounded binary frames).

Only :mod:`~aibench.partition.profile`, :mod:`~aibench.partition.models`' sweep and the command bodies import
torch; the decision itself is plain Python (so is reading a platform profile).
"""
