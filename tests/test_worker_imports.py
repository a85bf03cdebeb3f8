"""Worker processes import what their jobs need and not torch: multiprocessing makes every worker (forkserver or
spawn) import the main script's module again, so the scripts that start workers keep torch out of their top level,
and so do the modules of the jobs (PyAV decoding, DALI's CPU decoder, index probing)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from dali_pipelines.pyav_encode import write_video
from tests.conftest import ROOT, child_env
from tests.video_fixtures import pattern_frames

# Imported by the worker (found on the sys.path it gets from its main process, which has this folder first).
_REPORT_MODULE = """
import sys


def imported(names):
    main = sys.modules.get("__mp_main__")
    return {"modules": [n for n in names if n in sys.modules], "main": getattr(main, "__file__", None)}
"""

# Starts one worker as the loader's decode route does and runs the real decode and probe jobs in it, with `target`
# as the main module the worker imports again: what multiprocessing reads to name it is the main module's __spec__
# (`python -m target`) or, without one, its __file__ (`python target.py`). The target's own code runs only in the
# worker, as under the real command.
_DRIVER = """
import importlib.util, json, os, sys, types

checkout, target, h264, vp9 = sys.argv[1:5]
sys.path.insert(1, checkout)

from dali_pipelines.host_decode import decode_with_dali_cpu
from dali_pipelines.index import probe_video
from dali_pipelines.pyav_io import decode_indexed_frames
from evautil.workers import process_pool
import worker_report


def stat(path):
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


if __name__ == "__main__":
    this = sys.modules["__main__"]
    stand_in = types.ModuleType("__main__")
    if target.endswith(".py"):
        stand_in.__file__ = os.path.join(checkout, target)
    else:
        stand_in.__spec__ = importlib.util.find_spec(target)
    sys.modules["__main__"] = stand_in
    pool = process_pool(1)
    try:
        for job in [(probe_video, h264), (probe_video, vp9), (decode_indexed_frames, h264, [0, 3], *stat(h264), 1),
                    (decode_with_dali_cpu, vp9, [0, 3], *stat(vp9), "vp9")]:
            pool.submit(*job).result()
        print(json.dumps(pool.submit(worker_report.imported, ["torch", "av", "nvidia.dali"]).result()))
    finally:
        pool.shutdown()
        sys.modules["__main__"] = this
"""


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("worker_import_clips")
    paths = []
    for codec, ext in (("h264", ".mp4"), ("vp9", ".webm")):
        path = str(folder / f"clip{ext}")
        write_video(path, pattern_frames(8, 64, 48), codec=codec, gop=4)
        paths.append(path)
    return paths


@pytest.mark.parametrize("target", ["train.py", "tools.predict", "tools.extract_features", "tools/verify_data.py",
                                    "tools/prepare_kinetics.py"])
def test_workers_started_under_a_main_script_do_not_import_torch(tmp_path, clips, target):
    (tmp_path / "worker_report.py").write_text(_REPORT_MODULE)
    driver = tmp_path / "driver.py"
    driver.write_text(_DRIVER)
    done = subprocess.run([sys.executable, str(driver), str(ROOT), target, *clips], cwd=tmp_path,
                          capture_output=True, text=True, env=child_env())
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    main_file = os.path.join(str(ROOT), target if target.endswith(".py") else target.replace(".", "/") + ".py")
    assert report["main"] == main_file, report  # the worker did import the main script's module again
    assert report["modules"] == ["av", "nvidia.dali"], (  # its jobs ran there: PyAV and DALI's CPU decoder
        f"a worker under {target} imported torch: keep torch out of the main script's top level and out of the "
        f"job modules' imports (import it inside the functions that need it); report {report}")
