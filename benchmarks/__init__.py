"""Benchmarks that print numbers: loader, decoder, augmentation, index, training-step and multi-view evaluation
throughput, NVDEC's frames against PyAV's (``nvdec_parity``), plus the CPU reference loaders they compare against
and a GPU machine's environment check (``gpu_env``, the first stage of ``gpu_suite.sh``). Method and results:
docs/PERFORMANCE.md."""
