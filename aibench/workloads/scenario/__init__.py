"""Scenario benchmarks: a whole setting measured end to end (several processes, a service and its clients),
driven by the load generator. ``scenario/djinn``: DjiNN & Tonic's DNN service with a Tonic application as its
client (see docs/djinn.md)."""
