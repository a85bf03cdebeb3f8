r"""Train or evaluate an EVA video ViT on DALI-decoded clips.

    torchrun --nproc_per_node 8 train.py --cfg configs/k400.yaml --opts TRAIN.LR 1e-6
    python -m torch.distributed.launch --nproc_per_node 8 train.py -cfg configs/k400.yaml   # the original's way
    python train.py --cfg configs/demo.yaml                       # one process, CPU, synthetic clips
    python train.py --cfg configs/k400.yaml --only_test --resume eva_video_k400.pth \
        --opts TEST.NUM_CLIP 4 TEST.NUM_CROP 3                    # evaluate a released checkpoint, 4x3 views
    python train.py --cfg configs/k400.yaml --dry-run             # check files, print the plan, train nothing

Exit codes: 0 done; 1 a crash (an unexpected error, with its traceback, or a lost connection to a process that failed
first); 2 a bad input (config, list, file, checkpoint), a file that cannot be written, or a start refused (MASTER_PORT
in use, a rendezvous past EVA_RENDEZVOUS_TIMEOUT_S); 3 a non-finite loss or gradients; 4 stopped by SIGTERM or
SIGUSR1, after writing a step checkpoint when training (its line says how to resume); 5 another process of the run
stopped answering (EVA_HEARTBEAT_TIMEOUT_S), or on NCCL ended on a failure; 130 (as a shell reports it) stopped by
Ctrl-C, without a checkpoint. Each end is said in one line.
"""

from __future__ import annotations

import argparse
import os
import sys

# The data pipeline's threads share the CPU cores with PyTorch's OpenMP workers, and spinning OpenMP workers
# starve them (a 4x slower step was measured on a 2-core CPU run). Must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from evautil.interrupt import STARTING, STOPPED_EXIT_STATUS, finished, on_interrupt, stdout_may_close  # noqa: E402

if __name__ == "__main__":  # a Ctrl-C or a stop signal during the imports below (seconds, for torch) is one line too
    on_interrupt(STARTING, stop_status=STOPPED_EXIT_STATUS)

# Light imports only: every worker process imports this script again (evautil/workers.py); torch comes in main().
from configs import ConfigError, as_typed, flags_then_opts  # noqa: E402
from dali_pipelines.filelist import DataError, DataListError  # noqa: E402
from dali_pipelines.pyav_open import BadVideoError  # noqa: E402
from evautil.cli import ArgumentParser, as_typed_flags, flags_as_typed, home_path, named_path  # noqa: E402
from evautil.errors import CheckpointError  # noqa: E402
from evautil.files import write_failure  # noqa: E402

# Errors that mean "fix the input": one line, exit code 2, no traceback.
# DataError (a ValueError): unusable data lists or videos (e.g. DATA.STRICT with a bad file, no readable videos).
INPUT_ERRORS = (ConfigError, DataError, DataListError, BadVideoError, FileNotFoundError, CheckpointError)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cfg", "-cfg", "--config", dest="cfg", required=True, type=named_path,
                   help="YAML file overriding configs/defaults.py")
    p.add_argument("--opts", nargs=argparse.REMAINDER, default=[],
                   help="KEY VALUE pairs, e.g. TEST.NUM_CLIP 4 (other flags may follow them)")
    p.add_argument("--only_test", action="store_true", help="evaluate only (TEST.ONLY_TEST)")
    p.add_argument("--resume", default="", type=home_path,
                   help="checkpoint to resume from (or to evaluate with --only_test)")
    p.add_argument("--output", default=None, help="output directory (OUTPUT)")
    p.add_argument("--pretrained", default=None, help="initial weights (MODEL.PRETRAINED)")
    p.add_argument("--batch-size", type=int, default=None, help="clips per process (TRAIN.BATCH_SIZE)")
    p.add_argument("--accumulation-steps", type=int, default=None, help="TRAIN.ACCUMULATION_STEPS")
    p.add_argument("--dry-run", action="store_true", help="check config and files, print the plan, exit")
    # torch.distributed.launch passes the local rank as an argument: "--local_rank N" before torch 2.0,
    # "--local-rank=N" since (both spellings of one flag, as every flag). torchrun sets LOCAL_RANK instead.
    p.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)
    from configs import opts_last

    # --opts takes everything up to the next flag of this parser, so "--opts K V --dry-run" works.
    args = p.parse_args(opts_last(p, p.respelled(argv)))  # flags in either spelling: --dry_run, --only-test
    if args.local_rank is not None:
        os.environ.setdefault("LOCAL_RANK", str(args.local_rank))
    return args


def config_overrides(args: argparse.Namespace) -> tuple[list[tuple[str, str, str]], list[str]]:
    """The CLI flags as (flag, KEY, VALUE) for load_config (--opts wins), and a note for each flag --opts overrides."""
    flags = {"OUTPUT": "--output", "MODEL.PRETRAINED": "--pretrained", "TRAIN.BATCH_SIZE": "--batch-size",
             "TRAIN.ACCUMULATION_STEPS": "--accumulation-steps", "TEST.ONLY_TEST": "--only_test"}
    return flags_then_opts(as_typed_flags(args, flags), args)  # each named as typed: --batch_size 0 too


def main(argv: list[str] | None = None) -> int:
    from engine.process_end import with_exit_status

    args = parse_args(argv)  # the exit code also goes to OUTPUT/exit_status.json (not with --dry-run)
    return with_exit_status(lambda ended: _main(args, ended), None if args.dry_run else args.output)


def _main(args: argparse.Namespace, ended: dict) -> int:
    from configs import load_config
    from engine import distributed, runner
    from engine.process_end import crash_line, end_before_run, report_end
    from engine.preemption import PREEMPTED_EXIT_CODE, Preempted, StoppedOutsideTraining, stop_signals_raise
    from engine.train_epoch import NonFiniteLossError

    import wiring

    on_interrupt("the run stopped where it was, without a checkpoint: OUTPUT keeps the checkpoints written before, "
                 "and an index being built keeps the videos probed so far (SIGTERM or SIGUSR1 instead stop at the "
                 "next step with a checkpoint, exit code 4)")
    overrides, notes = config_overrides(args)
    try:
        with stop_signals_raise():  # from the start's end; a first index build (minutes) saves its work on a stop
            cfg = load_config(args.cfg, args.opts, flags=overrides)
            if notes and distributed.rank_and_world_size()[0] == 0:
                print(*notes, sep="\n", file=sys.stderr)
            ended["output"] = None if args.dry_run else cfg.OUTPUT
            run, resume = wiring.start(cfg, args.resume, plan_only=args.dry_run)  # None: the plan was printed
            if run is None:
                return 0
    except INPUT_ERRORS + (ValueError,) as e:  # ValueError: bad values found while building (named by builders)
        return end_before_run(f"error: {flags_as_typed(as_typed(e, overrides, args.opts), args)}", 2)  # as typed
    except OSError as e:
        if write_failure(e) is None:
            end_before_run(crash_line(e, distributed.joined()), None, e)
            raise
        return end_before_run(f"error: {write_failure(e)}", 2)
    except StoppedOutsideTraining as e:
        return end_before_run(f"stopped: {e}", PREEMPTED_EXIT_CODE)
    except Exception as e:  # a crash while starting: Python prints the traceback at exit
        end_before_run(crash_line(e, distributed.joined()), None, e)
        raise
    failed_at = None  # when this process's own failure was recorded for torchrun (see distributed.leave_after)
    try:
        with stop_signals_raise():  # the training steps' own handling (StepControl) takes over inside fit
            if cfg.TEST.ONLY_TEST:
                runner.only_test(run, cfg)
            else:
                runner.train(run, cfg, resume=resume, named=args.resume)
        return 0
    except INPUT_ERRORS as e:
        failed_at = report_end(run, f"error: {flags_as_typed(e, args)}")
        return 2
    except OSError as e:  # a full disk or a folder that became read-only: one line, and the run resumes later
        if write_failure(e) is None:
            raise
        failed_at = report_end(run, f"error: {write_failure(e)}")
        return 2
    except NonFiniteLossError as e:  # every rank stops at the same step with the same line
        run.metrics.info(f"error: {e}")
        distributed.record_failure(f"error: {e}")
        return 3
    except (Preempted, StoppedOutsideTraining) as e:  # SIGTERM / SIGUSR1: the same command resumes
        run.metrics.info(f"stopped: {e}")
        recorded = distributed.record_failure(f"stopped: {e}")
        if isinstance(e, StoppedOutsideTraining):  # maybe this rank alone: the others then lose it
            failed_at = recorded
        return PREEMPTED_EXIT_CODE
    except KeyboardInterrupt:  # the console gets the line from the interrupt hook; the run's log keeps it too
        run.metrics.log_interrupted()
        raise
    except Exception as e:  # a crash: Python prints the traceback at exit; the run's log keeps its line too
        line = crash_line(e, run.ctx.distributed)
        recorded = report_end(run, line, with_traceback=True)
        if not (run.ctx.distributed and distributed.lost_peer(e)):
            failed_at = recorded
        raise
    finally:
        if __name__ == "__main__" and sys.exc_info()[0] is None:  # returning: its last line is out, and closing
            finished(0)  # the loaders is no work to stop (evautil.interrupt.finished)
        try:
            run.close()
        finally:
            distributed.leave_after(failed_at)
            # Only a run that ends with every rank at the same point (returning, not on this rank's own failure)
            # leaves NCCL gracefully; any other end aborts it (distributed.shutdown).
            distributed.shutdown(graceful=sys.exc_info()[0] is None and failed_at is None)


if __name__ == "__main__":
    sys.exit(finished(stdout_may_close(main)))  # a closed stdout stops no work; after its last line, nor a Ctrl-C
