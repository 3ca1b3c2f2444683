"""``aibench tco``: DjiNN & Tonic's total-cost-of-ownership comparison (ISCA 2015, §6) fed with measured
throughput. :mod:`params` (Table 4/6 defaults, overrides, sources), :mod:`inputs` (throughput per app from
result files, or a given speed-up), :mod:`model` (the reconstructed formulas, docs/tco.md), :mod:`report`
(the JSON document, text, CSV) and :mod:`cli`. Nothing here imports torch."""
