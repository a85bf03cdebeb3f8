"""NVML device lookup: the handle must be the GPU torch computes on, also under CUDA_VISIBLE_DEVICES."""

from __future__ import annotations

import pytest
import torch

from engine.telemetry import nvml_handle


@pytest.mark.gpu
def test_nvml_handle_is_the_torch_device():
    pynvml = pytest.importorskip("pynvml")
    pynvml.nvmlInit()
    try:
        for i in range(torch.cuda.device_count()):
            handle = nvml_handle(pynvml, i)
            uuid = pynvml.nvmlDeviceGetUUID(handle)
            uuid = uuid.decode() if isinstance(uuid, bytes) else uuid
            assert uuid.endswith(str(torch.cuda.get_device_properties(i).uuid)), (i, uuid)
    finally:
        pynvml.nvmlShutdown()


class _ScriptedNvml:
    """Stands in for the NVML library on a machine without a driver: returns scripted readings in turn. A sample
    queries utilisation, decoder, then memory; the memory query moves on to the next reading (the last one stays)."""

    def __init__(self, readings):
        self.readings = list(readings)  # (gpu %, nvdec %, memory used bytes) per sample

    def nvmlInit(self):
        pass

    def _advance(self):
        return self.readings[0] if len(self.readings) == 1 else self.readings.pop(0)

    def nvmlDeviceGetUtilizationRates(self, handle):
        return type("Rates", (), {"gpu": self.readings[0][0]})()

    def nvmlDeviceGetDecoderUtilization(self, handle):
        return (self.readings[0][1], 1000)

    def nvmlDeviceGetMemoryInfo(self, handle):
        mem = self._advance()[2]
        return type("Mem", (), {"used": mem})()


def test_nvml_sampler_accounting(monkeypatch):
    """Means reset at each read; the NVDEC maximum and peak memory span the sampler's life (the benchmarks'
    figures); the benchmark wrapper reports them in percent and MiB."""
    import sys

    from benchmarks import hardware
    from engine import telemetry

    fake = _ScriptedNvml([(10, 20, 1 << 20), (30, 60, 3 << 20), (50, 40, 2 << 20)])
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.setattr(telemetry, "nvml_handle", lambda nvml, index: "gpu0")
    sampler = telemetry.NvmlSampler(0, period_s=3600)  # no background samples during the test
    sampler._sample()
    sampler._sample()
    assert sampler.read() == (pytest.approx(30.0), pytest.approx(40.0), 3 << 20)  # readings 1-3, in order
    assert sampler.max_nvdec_util == 60.0 and sampler.peak_mem_used == 3 << 20
    assert sampler.read() == (None, None, None)  # nothing sampled since the last read
    sampler.close()

    fake.readings = [(40, 80, 5 << 20)]
    with hardware.NvmlSampler(interval=3600) as gpu:
        pass
    assert gpu.result() == {"nvdec_util_mean": 80.0, "nvdec_util_max": 80.0, "sm_util_mean": 40.0,
                            "gpu_mem_used_peak_mib": 5.0}
    with hardware.NvmlSampler(enabled=False) as off:
        pass
    assert off.result()["nvdec_util_mean"] is None


def test_each_line_has_its_own_utilisation_window_and_the_summary_sets_start_up_apart(monkeypatch, tmp_path):
    """A train line's NVML means cover its steps only (not the start-up, an evaluation or a checkpoint write before
    them), an eval line carries its evaluation's, and summary.json's steady figures leave out the first window."""
    import json
    import sys

    from engine import metrics, telemetry

    fake = _ScriptedNvml([(90, 95, 8 << 30)])  # what start-up (index, model, graph build) would show
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.setattr(telemetry, "nvml_handle", lambda nvml, index: "gpu0")
    monkeypatch.setattr(telemetry.NvmlSampler, "_run", lambda self: None)  # samples only when the test takes them
    monkeypatch.setattr(metrics, "max_mem_gb", lambda device: 1.0)  # no CUDA here
    monkeypatch.setattr(metrics, "device_peak_flops", lambda device, precision="bf16": None)
    run = metrics.MetricLogger(str(tmp_path), device=torch.device("cuda", 0), print_freq=2, tensorboard=False,
                               progress_bar=False)

    def sample(gpu, dec, gib):
        fake.readings = [(gpu, dec, gib << 30)]
        run._nvml._sample()

    run.start_epoch(0, 2, epochs=2)
    sample(40, 20, 2)
    run.log_step(1, 0, 1.0, 0.1, clips=4, data_time=1.0, step_time=2.0)
    line1 = run.log_step(2, 0, 1.0, 0.1, clips=4, data_time=0.0, step_time=2.0)
    run.end_epoch(2, 0)
    progress = run.eval_progress("val", 1)
    sample(70, 90, 3)
    evaluation = run.log_eval({"split": "val", "top1": 50.0, "top5": 100.0, "mean_class_top1": 50.0, "num_videos": 4,
                               "views": 1}, 0, 2)
    sample(0, 0, 1)  # a checkpoint write after the evaluation
    run.start_epoch(1, 2, epochs=2)
    sample(50, 30, 4)
    run.log_step(3, 1, 1.0, 0.1, clips=4, data_time=0.1, step_time=1.0)
    line2 = run.log_step(4, 1, 1.0, 0.1, clips=4, data_time=0.1, step_time=1.0)
    summary = run.summary({})
    run.close()
    del progress

    assert (line1["gpu_util"], line1["nvdec_util"], line1["gpu_mem_used_gb"]) == (40.0, 20.0, 2.0)
    assert (evaluation["gpu_util"], evaluation["nvdec_util"]) == (70.0, 90.0)
    assert (line2["gpu_util"], line2["nvdec_util"], line2["gpu_mem_used_gb"]) == (50.0, 30.0, 4.0)
    assert summary["mean_clips_per_sec"] == pytest.approx(16 / 6)
    assert summary["mean_data_wait_pct"] == pytest.approx(20.0)
    assert summary["steady_clips_per_sec"] == pytest.approx(4.0)
    assert summary["steady_data_wait_pct"] == pytest.approx(10.0)
    assert summary["max_nvdec_util"] == 95.0 and summary["peak_gpu_mem_used_gb"] == 8.0
    log = (tmp_path / "log_rank0.txt").read_text()
    assert "mem 1.00 GiB (device 2.0 GiB)" in log and "mem 1.00 GiB (device 4.0 GiB)" in log
    written = [json.loads(text) for text in open(tmp_path / "metrics.jsonl")]
    assert [w["kind"] for w in written] == ["train", "eval", "train"]
    assert all(set(metrics.STEP_KEYS) <= set(w) for w in written if w["kind"] == "train")
    assert set(metrics.EVAL_KEYS) <= set(written[1]) and written[1]["nvdec_util"] == 90.0
    assert json.load(open(tmp_path / "summary.json"))["steady_clips_per_sec"] == pytest.approx(4.0)


def test_host_memory_counts_this_process_and_every_process_it_started():
    import subprocess
    import sys
    import time

    from engine.telemetry import host_memory_gb

    before = host_memory_gb()
    # a worker's worker (as multiprocessing's fork server starts the decode workers) holding 300 MiB
    code = ("import subprocess, sys; subprocess.run([sys.executable, '-c', "
            "'import time; b = bytearray(300 * 2**20); b[::4096] = b\"x\" * len(b[::4096]); time.sleep(60)'])")
    child = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 30
        while (now := host_memory_gb())["workers_rss_gb"] < before["workers_rss_gb"] + 0.29:
            assert time.monotonic() < deadline, now
            time.sleep(0.1)
    finally:
        child.kill()
        child.wait()
    with open("/proc/self/status") as f:
        vm_rss_kib = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    assert abs(host_memory_gb()["host_rss_gb"] - vm_rss_kib / 2**20) < 0.05
    assert now["workers_rss_gb"] < before["workers_rss_gb"] + 0.45  # the two interpreters and their 300 MiB
