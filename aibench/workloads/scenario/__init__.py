"""Scenario benchmarks: a whole setting measured end to end (several processes, a service and its clients),
driven by the load generator. Each starts and owns its system under test (capability ``owns-system``):
``scenario/djinn``, DjiNN & Tonic's DNN service with a Tonic application as its client (docs/djinn.md);
``scenario/neurosurgeon``, a network split between a device process and a server process over a shaped
link (docs/partition.md)."""
