"""The system under test: what the load generators drive (in-process, worker processes, a remote service)."""
