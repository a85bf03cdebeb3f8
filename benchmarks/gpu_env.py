"""What a GPU machine offers the project: GPU, driver, NVDEC, versions, and the packages the project imports.

    python -m benchmarks.gpu_env          # exit code 1 when GPU decoding cannot work or a dependency is missing

The first stage of ``benchmarks/gpu_suite.sh``: a missing ``libnvcuvid``, a DALI built for a newer CUDA than the
driver, or a package that did not travel with the environment is named here, before any benchmark runs.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import subprocess
import sys
from collections.abc import Mapping

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Import names of what the project needs at run time (pyproject.toml's core dependencies, and DALI), and psutil,
# which the benchmarks' CPU monitor needs.
RUNTIME_IMPORTS = ("torch", "timm", "av", "einops", "yacs", "yaml", "numpy", "pynvml", "safetensors",
                   "huggingface_hub", "tensorboard", "tqdm", "matplotlib", "nvidia.dali", "psutil")
# Of those, found and versioned without an import here: timm is pure Python over torch (imported here), and its
# import (torchvision's models, torch._dynamo, sympy) was half of the stage's CPU time: 3 s of 6, which a busy 2-core
# machine stretched past the stage's 20 s box. A package that did not travel is not found either. Each is imported
# in a process of its own, started first and read last (:func:`start_import_checks`): one installed but failing
# on import (built for another torch) passed this stage and failed every later one.
FOUND_NOT_IMPORTED = ("timm",)
# What the smoke plan's gpu_tests stage runs with: without pytest-timeout its `--timeout` flag stops pytest before
# any test, and the stage would say only "unrecognized arguments".
SUITE_IMPORTS = ("pytest", "pytest_timeout")
# Not needed by the smoke or bench plans, but by the full loader and decode stages: the original pipeline's decoder,
# the baseline of their headline ratios (without it those stages fail after their report).
BASELINE_IMPORTS = ("decord",)


def installed_version(import_name: str, module, owners: Mapping[str, list[str]] | None = None) -> str:
    """The module's ``__version__``, else (yacs and pynvml have none; ``module`` is None for a package found, not
    imported) the version of the distribution that installed it, found in ``owners``
    (``importlib.metadata.packages_distributions()``, read here when not given: it walks every installed
    distribution's files)."""
    version = getattr(module, "__version__", None)
    if version:
        return str(version)
    if owners is None:
        owners = importlib.metadata.packages_distributions()
    for dist in owners.get(import_name.split(".")[0], []):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "version unknown"


def start_import_checks(names: tuple[str, ...] = FOUND_NOT_IMPORTED) -> dict[str, subprocess.Popen]:
    """A Python process importing each of ``names``, started now to run beside this stage's other checks."""
    return {name: subprocess.Popen([sys.executable, "-c", f"import {name}"], stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, errors="replace")
            for name in names}


def import_failures(checks: Mapping[str, subprocess.Popen]) -> dict[str, str]:
    """Each of ``checks``' packages whose import failed, with the last line of its error (the exception)."""
    failed = {}
    for name, proc in checks.items():
        _, err = proc.communicate()
        if proc.returncode != 0:
            lines = [line.strip() for line in err.splitlines() if line.strip()]
            failed[name] = lines[-1] if lines else f"the import ended with exit code {proc.returncode}"
    return failed


def print_nvdec_caps(compute_capability: tuple[int, int], query=None) -> None:
    """The driver's NVDEC answers for GPU 0 (engines, each codec's sizes per bit depth) and where NVIDIA's published
    table, which routing falls back to, differs from them. Not a problem when the driver cannot be asked: routing
    then follows the table."""
    from dali_pipelines.nvdec_caps import NvdecCapsError, describe_caps, query_decoder_caps
    from dali_pipelines.nvdec_support import table_differences
    from dali_pipelines.routing import nvdec_configs

    try:
        answers = (query or query_decoder_caps)(nvdec_configs(None, 12), device=0)
    except NvdecCapsError as e:
        print(f"NVDEC caps      could not ask the driver ({e}); routing follows the published table")
        return
    engines = max((c.engines for c in answers.values() if c.supported), default=0)
    print(f"NVDEC engines   {engines or 'unknown (the driver does not say)'}")
    for line in describe_caps(answers):
        print(f"NVDEC caps      {line}")
    for line in table_differences(answers, compute_capability):
        print(f"NVDEC vs table  {line}")


def main(argv: list[str] | None = None) -> int:
    from evautil.cli import ArgumentParser

    ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args(argv)
    checks = start_import_checks()
    try:
        return _check_environment(checks)
    finally:
        for proc in checks.values():  # a stage stopped before it read them (an error, a Ctrl-C)
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


def _check_environment(checks: Mapping[str, subprocess.Popen]) -> int:
    """The stage's checks and lines (:func:`main`); ``checks``: the imports running in processes of their own."""
    from dali_pipelines.nvdec_support import dali_cuda_major, driver_cuda_version, gpu_decode_problems, nvcuvid_loads

    # The GPU facts first: should the package imports below outrun the stage's time box, these are in the log.
    driver, dali_cuda = driver_cuda_version(), dali_cuda_major()
    driver_text = "%d.%d" % driver if driver else "unknown (no NVML)"
    print(f"driver CUDA     {driver_text}; DALI built for CUDA {dali_cuda}")
    nvcuvid = nvcuvid_loads()
    print(f"libnvcuvid      {'loads' if nvcuvid else 'MISSING'}")
    missing, absent = [], set()
    try:
        import torch
    except Exception:  # noqa: BLE001 - named with the other packages below
        torch = None
    if torch is not None and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        print(f"GPU             {props.name}, {props.total_memory / 2**30:.0f} GiB, compute capability "
              f"{props.major}.{props.minor}, torch CUDA {torch.version.cuda}")
        if nvcuvid:
            print_nvdec_caps((props.major, props.minor))
    elif torch is not None:
        missing.append("CUDA (torch.cuda.is_available() is False)")
    # Which distribution installed each package, read once: a walk over every installed distribution's files took
    # 0.3 to 1 s, once for each package without __version__ (yacs, pynvml, pytest_timeout), against a 20 s box.
    owners = importlib.metadata.packages_distributions()
    for name in RUNTIME_IMPORTS + SUITE_IMPORTS:
        try:
            if name in FOUND_NOT_IMPORTED:
                if importlib.util.find_spec(name) is None:
                    raise ModuleNotFoundError(f"No module named {name!r}")
                module = None
            else:
                module = importlib.import_module(name)
            print(f"{name:15s} {installed_version(name, module, owners)}")
        except Exception as err:  # report every missing package, not just the first
            missing.append(f"{name} ({type(err).__name__}: {err})")
            absent.add(name)
    for name in BASELINE_IMPORTS:
        try:
            module = importlib.import_module(name)
            print(f"{name:15s} {installed_version(name, module, owners)}")
        except Exception:  # noqa: BLE001 - not a problem for this machine, only for two full stages
            print(f"{name:15s} not installed (the loader and decode stages' original-pipeline baseline)")
    broken = [f"{name} is installed but its import fails: {why}"
              for name, why in import_failures(checks).items() if name not in absent]  # one line for a missing one
    problems = gpu_decode_problems(driver, dali_cuda, nvcuvid) + [f"missing: {m}" for m in missing] + broken
    for problem in problems:
        print(f"PROBLEM: {problem}")
    print("environment OK" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    from evautil.interrupt import stdout_may_close
    sys.exit(stdout_may_close(main, printing_only_without=("--json", "--plot")))  # | head: done at once
