"""tbpipe's benchmarks: ``python -m benchmarks`` runs all five (see docs/performance.md)."""
