"""Comparing runs and the CI performance gate. Never imports torch.

* :mod:`~aibench.gate.compare` — ``aibench compare``: stored results matched by benchmark and config hash,
  ratios with confidence intervals, refusals with reasons.
* :mod:`~aibench.gate.gate` — ``aibench gate``: baseline and candidate environments run interleaved, K rounds
  of fresh processes in a balanced random order.
* :mod:`~aibench.gate.decide` — the decision rule and the exit codes; :mod:`~aibench.gate.stats` — geometric
  means and seeded bootstrap intervals.
* :mod:`~aibench.gate.pairs` — the JSON document both commands write; :mod:`~aibench.gate.render` — table,
  markdown and JUnit XML.
"""
