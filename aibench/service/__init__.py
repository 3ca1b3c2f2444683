"""The DNN service (``aibench serve``): the Tonic networks behind DjiNN's binary protocol and the Open
Inference Protocol, batched dynamically for worker processes.

Split by idea:

- :mod:`~aibench.service.models`: what can be served (shapes, defaults; light) and how a worker builds it;
- :mod:`~aibench.service.worker`: one instance, a process that computes batches (torch lives only there);
- :mod:`~aibench.service.instances`: the server's side of its instances (start, feed, restart);
- :mod:`~aibench.service.scheduler`: requests → dynamic batches (:class:`~aibench.sut.batcher.BatchQueue`)
  → free instances, and the byte budget;
- :mod:`~aibench.service.stats`: Triton's statistics;
- :mod:`~aibench.service.oip` and :mod:`~aibench.service.djinn`: the two protocols;
- :mod:`~aibench.service.server`: start-up, readiness, graceful shutdown; :mod:`~aibench.service.cli`: the
  command; :mod:`~aibench.service.launch`: start a server in a subprocess from Python (tests, clients).

See docs/service.md.
"""
