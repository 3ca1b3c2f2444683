"""AIBench's e-commerce search scenario: generated data, offline-trained models and the online path.

- :mod:`~aibench.ecommerce.store`: the SQLite store (FTS5 indexes per popularity cluster, users, products,
  queries, sessions and their impressions, metadata with a completion marker); opening refuses a missing,
  half-written or foreign store.
- :mod:`~aibench.ecommerce.generate`: the seeded generator and its hidden ground truth.
- :mod:`~aibench.ecommerce.models` / :mod:`~aibench.ecommerce.train`: the category classifier, the
  user-preference network and the learning-to-rank model; training and held-out quality.
- :mod:`~aibench.ecommerce.path`: the in-process online path, each module timed on its own;
  :mod:`~aibench.ecommerce.stream`: streaming-like ranker updates swapped into it during a run.
- :mod:`~aibench.ecommerce.modules`: the non-AI module work both deployments share (search, top-k, fetch).
- The services deployment: :mod:`~aibench.ecommerce.services` (each module a process behind HTTP),
  :mod:`~aibench.ecommerce.served` (the three models as ``aibench serve`` models),
  :mod:`~aibench.ecommerce.deploy` (a run starts, uses and stops them; the load driver's side).

Only :mod:`models`, :mod:`train`, :mod:`path` and :mod:`stream` import torch at module level.
"""
