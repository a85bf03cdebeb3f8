"""TRAIN.PRECISION on a GPU with and without native bf16 (compute capability 8.0): what ``auto`` chooses and says,
and the warning for bf16 set on an older GPU. No GPU is needed: torch.cuda's answers are stood in for."""

from __future__ import annotations

import inspect
import os

import pytest
import torch

from configs import load_config
from engine.distributed import DistContext
from engine.precision import chosen_precision, emulated_bf16_warning, resolve_precision
from engine.run_start import open_run
from engine.run_files import release_output

GPU = torch.device("cuda", 0)
CARDS = {"Tesla V100-SXM2-32GB": (7, 0), "Tesla T4": (7, 5), "NVIDIA A100-SXM4-80GB": (8, 0),
         "NVIDIA H100 80GB HBM3": (9, 0)}


def _card(monkeypatch, name: str, with_emulation_argument: bool = True) -> None:
    """The run's GPU is ``name``. torch's bf16 check answers as torch does: with ``including_emulation`` False,
    for the capability; a torch without that argument counts emulation as support (True on any card)."""
    capability = CARDS[name]
    if with_emulation_argument:
        def supported(including_emulation: bool = True) -> bool:
            return including_emulation or capability >= (8, 0)
    else:
        def supported() -> bool:
            return True
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", supported)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)


@pytest.mark.parametrize("with_emulation_argument", [True, False])
@pytest.mark.parametrize("name", ["Tesla V100-SXM2-32GB", "Tesla T4"])
def test_auto_runs_fp16_with_its_loss_scaler_on_a_gpu_without_native_bf16(monkeypatch, name,
                                                                          with_emulation_argument):
    """A V100 or a T4 emulates bf16, far slower than fp16, and auto picked bf16 on any CUDA GPU; the original ran
    fp16 there (apex O1). The start-up line's reason names the card and why."""
    _card(monkeypatch, name, with_emulation_argument)
    assert resolve_precision("auto", GPU) == (torch.float16, True)
    chosen, why = chosen_precision("auto", GPU)
    major, minor = CARDS[name]
    assert chosen == "fp16" and why == (f"TRAIN.PRECISION auto: {name} (compute capability {major}.{minor}) has no "
                                        "native bf16, so fp16 with a loss scaler, as the original's apex O1")


@pytest.mark.parametrize("with_emulation_argument", [True, False])
@pytest.mark.parametrize("name", ["NVIDIA A100-SXM4-80GB", "NVIDIA H100 80GB HBM3"])
def test_auto_runs_bf16_on_a_gpu_that_computes_it_natively(monkeypatch, name, with_emulation_argument):
    _card(monkeypatch, name, with_emulation_argument)
    assert resolve_precision("auto", GPU) == (torch.bfloat16, False)
    chosen, why = chosen_precision("auto", GPU)
    assert chosen == "bf16" and why.startswith(f"TRAIN.PRECISION auto: {name} (compute capability ")
    assert why.endswith("computes bf16 natively") and emulated_bf16_warning("bf16", GPU) == ""


def test_auto_on_a_cpu_and_a_precision_set_are_what_they_say():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == (None, False)
    assert chosen_precision("auto", cpu) == ("fp32", "TRAIN.PRECISION auto on a CPU")
    assert chosen_precision("bf16", cpu) == ("bf16", "TRAIN.PRECISION bf16")
    assert resolve_precision("fp32", cpu) == (None, False) and emulated_bf16_warning("bf16", cpu) == ""


def test_the_installed_torch_checks_native_bf16_without_emulation():
    """The check asked first exists in this torch; else only the capability fallback would ever run."""
    assert "including_emulation" in inspect.signature(torch.cuda.is_bf16_supported).parameters


def test_bf16_set_on_a_v100_runs_on_after_one_warning(monkeypatch, tmp_path, capsys):
    """TRAIN.PRECISION bf16 on a V100: the run keeps bf16 (what was asked) and its start says once that it is
    emulated and slow, in the console and the run's log."""
    _card(monkeypatch, "Tesla V100-SXM2-32GB")
    assert resolve_precision("bf16", GPU) == (torch.bfloat16, False)
    out = tmp_path / "run"
    cfg = load_config(None, ["OUTPUT", str(out), "TRAIN.PRECISION", "bf16", "LOG.TENSORBOARD", "False",
                             "LOG.NVML", "False", "LOG.PROGRESS_BAR", "False"])
    metrics = open_run(cfg, DistContext(device=GPU))
    try:
        metrics.close()
    finally:
        release_output(str(out))
    said = ("WARNING: TRAIN.PRECISION bf16 on Tesla V100-SXM2-32GB (compute capability 7.0), which has no native "
            "bf16: it is emulated and runs far slower than fp16; set TRAIN.PRECISION auto or fp16 (with a loss "
            "scaler, as the original's apex O1)")
    assert [x for x in capsys.readouterr().out.splitlines() if "bf16" in x] == [said]
    logged = (out / "log_rank0.txt").read_text()
    assert logged.count("no native bf16") == 1 and said in logged


def _precision_of_a_rank(rank: int, world: int, init_file: str, cards: list[str], out: dict) -> None:
    """A rank of a job whose GPU is ``cards[rank]`` (torch.cuda's answers stood in; gloo carries the collectives):
    what auto and bf16 become on it once it joined through ``init_from_env``."""
    import torch.distributed as dist

    from engine import distributed
    from engine.precision import emulated_bf16_warning, resolve_precision

    capability = CARDS[cards[rank]]
    torch.cuda.is_bf16_supported = lambda including_emulation=True: including_emulation or capability >= (8, 0)
    torch.cuda.get_device_capability = lambda device=None: capability
    torch.cuda.get_device_name = lambda device=None: cards[rank]
    torch.cuda.device_count = lambda: 1  # each rank sees its own GPU (a scheduler's CUDA_VISIBLE_DEVICES)
    torch.cuda.set_device = lambda device: None
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), EVA_HEARTBEAT_TIMEOUT_S="0")
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)  # joined
    try:
        ctx = distributed.init_from_env("cuda")
        out[rank] = (resolve_precision("auto", ctx.device), chosen_precision("auto", ctx.device),
                     emulated_bf16_warning("bf16", ctx.device))
        dist.barrier()
    finally:
        distributed.shutdown()


def _job_of(tmp_path, cards: list[str]) -> dict:
    import torch.multiprocessing as mp

    with mp.get_context("spawn").Manager() as manager:
        out = manager.dict()
        mp.spawn(_precision_of_a_rank, args=(len(cards), str(tmp_path / "init"), cards, out), nprocs=len(cards),
                 join=True)
        return dict(out)


def test_a_job_mixing_gpu_generations_runs_fp16_on_every_rank_and_says_which_gpu_chose(tmp_path):
    """Rank 0 on an A100, rank 1 on a V100: each rank chose from its own GPU, bf16 on rank 0 and fp16 with a loss
    scaler on rank 1, and DDP all-reduced gradients of different dtypes and scales. Both run fp16 now; rank 0's
    start-up line names rank 1's GPU, and bf16 set on such a job warns of it on every rank."""
    ranks = _job_of(tmp_path, ["NVIDIA A100-SXM4-80GB", "Tesla V100-SXM2-32GB"])
    v100 = "Tesla V100-SXM2-32GB (compute capability 7.0)"
    assert [ranks[r][0] for r in (0, 1)] == [(torch.float16, True)] * 2
    assert ranks[0][1] == ("fp16", f"TRAIN.PRECISION auto: rank 1's {v100} has no native bf16, so fp16 with a loss "
                                   "scaler on every rank, as the original's apex O1")
    assert ranks[1][1] == ("fp16", f"TRAIN.PRECISION auto: {v100} has no native bf16, so fp16 with a loss scaler on "
                                   "every rank, as the original's apex O1")
    assert ranks[0][2].startswith(f"TRAIN.PRECISION bf16 on rank 1's {v100}, which has no native bf16: it is emulated")
    assert ranks[1][2].startswith(f"TRAIN.PRECISION bf16 on {v100}, which has no native bf16")


def test_a_job_of_gpus_with_native_bf16_runs_bf16_on_every_rank(tmp_path):
    ranks = _job_of(tmp_path, ["NVIDIA A100-SXM4-80GB", "NVIDIA H100 80GB HBM3"])
    assert [ranks[r][0] for r in (0, 1)] == [(torch.bfloat16, False)] * 2
    assert ranks[1][1] == ("bf16", "TRAIN.PRECISION auto: NVIDIA H100 80GB HBM3 (compute capability 9.0) computes "
                                   "bf16 natively, as every rank's GPU does")
    assert ranks[0][2] == ranks[1][2] == ""


def _tool_load_lines(monkeypatch, tmp_path, capsys, card: str, precision: str) -> list[str]:
    """The stderr lines of the tools' model load (tools.model_io.load_model) of a tiny demo model at ``precision``
    on a stood-in ``card``: no GPU here, the model is built on the CPU, the precision decided for the card."""
    from models import build_model
    from tools import model_io

    _card(monkeypatch, card)
    demo = ["DATA.NUM_CLASSES", "3", "DATA.NUM_FRAMES", "4", "DATA.TUBELET_SIZE", "2", "DATA.INPUT_SIZE", "32"]
    cfg = load_config(os.path.join(os.path.dirname(__file__), "..", "configs", "demo.yaml"),
                      [*demo, "TRAIN.PRECISION", precision])
    weights = tmp_path / "model.pth"
    torch.save({"model": build_model(cfg).state_dict()}, weights)
    monkeypatch.setattr(model_io, "build_model", lambda c, device=None: build_model(c, device="cpu"))
    model_io.load_model(cfg, str(weights), GPU)
    return capsys.readouterr().err.splitlines()


@pytest.mark.parametrize("precision", ["bf16", "auto"])
def test_predict_and_extract_features_warn_once_of_bf16_set_on_a_v100(monkeypatch, tmp_path, capsys, precision):
    """The tools' model (tools.model_io.load_model, which predict, extract_features and Predictor load) ran bf16 set
    on a GPU that emulates it without a word, where a training run warns: the same warning now, once; none for
    auto, which runs fp16 there, and says so once in the start line's words (it ran fp16 without a word)."""
    err = _tool_load_lines(monkeypatch, tmp_path, capsys, "Tesla V100-SXM2-32GB", precision)
    warned = [x for x in err if x.startswith("warning:") and "bf16" in x]
    assert warned == ([f"warning: {emulated_bf16_warning('bf16', GPU)}"] if precision == "bf16" else [])
    assert warned == [] or warned[0].startswith("warning: TRAIN.PRECISION bf16 on Tesla V100-SXM2-32GB (compute "
                                                "capability 7.0), which has no native bf16: it is emulated")
    noted = [x for x in err if "precision" in x.casefold() and not x.startswith("warning:")]
    assert noted == ([] if precision == "bf16" else [
        "note: precision fp16 (TRAIN.PRECISION auto: Tesla V100-SXM2-32GB (compute capability 7.0) has no native "
        "bf16, so fp16 with a loss scaler, as the original's apex O1)"])


def test_a_job_with_several_ranks_without_native_bf16_names_the_lowest_and_how_many(monkeypatch):
    """Two of four ranks on V100s: the line named rank 1's GPU alone, as if it were the only one; it says how many
    more ranks lack native bf16 now, in the same line."""
    from engine import precision

    _card(monkeypatch, "NVIDIA A100-SXM4-80GB")
    v100 = "Tesla V100-SXM2-32GB (compute capability 7.0)"
    monkeypatch.setattr(precision, "all_gather_objects", lambda obj, ctx: [obj, (False, v100), obj, (False, v100)])
    precision.agree_across_ranks(DistContext(rank=0, world_size=4, device=GPU))
    try:
        assert chosen_precision("auto", GPU) == ("fp16", f"TRAIN.PRECISION auto: rank 1's {v100} has no native bf16 "
                                                 "(nor do 1 more of the job's 4 ranks), so fp16 with a loss scaler "
                                                 "on every rank, as the original's apex O1")
        assert emulated_bf16_warning("bf16", GPU).startswith(
            f"TRAIN.PRECISION bf16 on rank 1's {v100}, which has no native bf16 (nor do 1 more of the job's 4 ranks): "
            "it is emulated")
        monkeypatch.setattr(precision, "all_gather_objects", lambda obj, ctx: [obj, (False, v100), obj, obj])
        precision.agree_across_ranks(DistContext(rank=0, world_size=4, device=GPU))  # one rank: no count
        assert chosen_precision("auto", GPU)[1].startswith(f"TRAIN.PRECISION auto: rank 1's {v100} has no native "
                                                           "bf16, so fp16")
    finally:
        precision.forget_job_answer()


def test_a_second_run_in_the_process_agrees_anew_after_the_first_shut_down(monkeypatch):
    """A job on a V100 and, in the same process (tests, a notebook), a later run on an A100: the later run kept the
    first job's answer (fp16, naming the V100) until its own ranks agreed; distributed.shutdown drops it now."""
    from engine import distributed, precision

    _card(monkeypatch, "Tesla V100-SXM2-32GB")
    precision.agree_across_ranks(DistContext(rank=0, world_size=1, device=GPU))  # the first job's answer
    assert chosen_precision("auto", GPU)[0] == "fp16"
    distributed.shutdown()  # the first run ends (no process group: safe)
    _card(monkeypatch, "NVIDIA A100-SXM4-80GB")
    assert chosen_precision("auto", GPU) == ("bf16", "TRAIN.PRECISION auto: NVIDIA A100-SXM4-80GB (compute "
                                                     "capability 8.0) computes bf16 natively")


@pytest.mark.parametrize("precision", ["auto", "fp32"])
def test_the_tools_say_nothing_of_a_precision_auto_did_not_turn_to_fp16(monkeypatch, tmp_path, capsys, precision):
    """auto's bf16 on a GPU that computes it, and a precision set, are what the config says: no line."""
    err = _tool_load_lines(monkeypatch, tmp_path, capsys, "NVIDIA A100-SXM4-80GB", precision)
    assert [x for x in err if "precision" in x.casefold()] == []
