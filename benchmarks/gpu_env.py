"""What a GPU machine offers the project: GPU, driver, NVDEC, versions, and the packages the project imports.

    python -m benchmarks.gpu_env          # exit code 1 when GPU decoding cannot work or a dependency is missing

The first stage of ``benchmarks/gpu_suite.sh``: a missing ``libnvcuvid``, a DALI built for a newer CUDA than the
driver, or a package that did not travel with the environment is named here, before any benchmark runs.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Import names of what the project needs at run time (pyproject.toml's core dependencies, and DALI).
RUNTIME_IMPORTS = ("torch", "timm", "av", "einops", "yacs", "yaml", "numpy", "pynvml", "safetensors", "tqdm",
                   "matplotlib", "nvidia.dali")


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args(argv)
    from dali_pipelines.nvdec_support import dali_cuda_major, driver_cuda_version, gpu_decode_problems, nvcuvid_loads

    missing = []
    for name in RUNTIME_IMPORTS:
        try:
            module = importlib.import_module(name)
            print(f"{name:12s} {getattr(module, '__version__', '')}")
        except Exception as err:  # report every missing package, not just the first
            missing.append(f"{name} ({type(err).__name__}: {err})")
    import torch

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        print(f"GPU          {props.name}, {props.total_memory / 2**30:.0f} GiB, compute capability "
              f"{props.major}.{props.minor}, torch CUDA {torch.version.cuda}")
    else:
        missing.append("CUDA (torch.cuda.is_available() is False)")
    driver = driver_cuda_version()
    print(f"driver CUDA  {'%d.%d' % driver if driver else 'unknown (no NVML)'}; DALI built for CUDA {dali_cuda_major()}")
    nvcuvid = nvcuvid_loads()
    print(f"libnvcuvid   {'loads' if nvcuvid else 'MISSING'}")
    problems = gpu_decode_problems(driver, dali_cuda_major(), nvcuvid) + [f"missing: {m}" for m in missing]
    for problem in problems:
        print(f"PROBLEM: {problem}")
    print("environment OK" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
