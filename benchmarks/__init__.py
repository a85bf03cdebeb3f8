"""Benchmarks that print numbers: loader, decoder, training-step and multi-view evaluation throughput, plus the
CPU reference loaders they compare against. Method and results: docs/PERFORMANCE.md."""
