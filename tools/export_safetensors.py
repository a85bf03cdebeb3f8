r"""Write a checkpoint's model as ``.safetensors`` with the metadata needed to use it without a config.

    python -m tools.export_safetensors --cfg configs/k400.yaml --weights output/k400/best.pth \
        --out eva_video_k400.safetensors
    python -m tools.export_safetensors --cfg configs/k400.yaml --weights hf://owner/repo/eva_video_k400.pth \
        --out eva_video_k400.safetensors
    python -m tools.export_safetensors --weights eva_video_k400.safetensors --out eva_video_k400_bf16.safetensors \
        --dtype bfloat16

The input is any checkpoint the project reads (a training checkpoint, a released one, an ``hf://`` reference); it
is loaded into the model of ``--cfg`` (MODEL.ARCH, DATA.NUM_FRAMES / INPUT_SIZE / NUM_CLASSES, and
MODEL.CLASS_MAPPING for a larger head), so the file holds exactly that model. The metadata records the
architecture, frames, tubelet, input size, mean and std, and the class names from DATA.LABEL_LIST. A label list
that is set but does not exist is an error (``predict`` only warns): the names would be missing from every use of
the file; ``--opts DATA.LABEL_LIST ""`` exports without names. Weights without a classification head (a pretrained
backbone) are exported without one, as ``num_classes`` 0 and without names: ``extract_features`` and fine-tuning
(MODEL.PRETRAINED) use the file, and ``predict`` refuses it, pointing to ``extract_features``; a head of another
class count than DATA.NUM_CLASSES is refused.

An exported ``.safetensors`` needs no ``--cfg`` (a re-export to another ``--dtype``, say): its settings and class
names are carried over unchanged; ``--opts DATA.LABEL_LIST`` names the classes anew, and an ``--opts`` value that
contradicts the file is refused. Class names that give one name to several classes (the label list's or the file's)
are written as they are, with the one-line warning train.py and predict give. A checkpoint without that metadata
(``.pth``) needs ``--cfg``: without it, a one-line error naming ``--cfg``, exit status 2.

Exit status: 0 when the file was written, 2 for unusable input (config, weights, an --out that cannot be written,
an existing one in a folder that cannot be written in, where the new file is written before it replaces it, or one
that is --weights, which the export would replace) with a one-line error, 4 when stopped by SIGTERM or SIGUSR1
(a batch scheduler's stop; one ``stopped:`` line): the file is written atomically, so --out was not written and
an earlier file there is left as it was. A stop that comes once the new file is in place (renamed over --out) no
longer stops the export: it ends as written, with status 0.
A Ctrl-C there still ends it, saying the file was written whole.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from evautil.interrupt import (STARTING, STOPPED_EXIT_STATUS, Stopped, finished, on_interrupt,
                               stop_signals_raise, stopped_during_work)


if __name__ == "__main__":  # a Ctrl-C or a stop signal during the imports below (seconds, for torch) is one line too
    on_interrupt(STARTING, stop_status=STOPPED_EXIT_STATUS)

import torch  # noqa: E402

from engine.evaluate import names_given_twice, read_label_names  # noqa: E402
from evautil.cli import ArgumentParser, home_path  # noqa: E402
from evautil.files import cannot_read, error_writing, file_version, not_a_file  # noqa: E402
from models.weights_file import save_weights_file  # noqa: E402
from tools.inference import (InputError, check_output_not_input, check_output_path, load_model,  # noqa: E402
                            opts_last)

__all__ = ["export", "main"]


def export(cfg, weights: str, out: str, dtype: torch.dtype | None = None,
           class_names: list[str] | None = None) -> dict[str, str]:
    """Load ``weights`` into ``cfg``'s model (without a head when they have none) and write it to ``out``; returns
    the metadata written. The class names are ``class_names`` when given, else read from DATA.LABEL_LIST.

    Raises:
        FileNotFoundError: DATA.LABEL_LIST is set and does not exist (checked before the model is loaded).
        ConfigError: the label list is not valid (from ``read_label_names``).
    """
    from dali_pipelines.augment import MEAN, STD  # the normalisation the data pipeline applies (numpy only)

    names: list[str] = list(class_names or [])
    labels = "" if class_names is not None else cfg.DATA.LABEL_LIST
    if labels and not os.path.isfile(labels):  # an absence, unlike predict's, would be written into the file
        raise FileNotFoundError(f"label list DATA.LABEL_LIST = {labels} {not_a_file(labels)}; the export records the "
                                "class names: give the list's path, or --opts DATA.LABEL_LIST \"\" to export "
                                "without names")
    if labels:
        table = read_label_names(labels, cfg.DATA.NUM_CLASSES)
        names = [table[c] for c in range(cfg.DATA.NUM_CLASSES)]
    model = load_model(cfg, weights, torch.device("cpu"), without_head=True)
    if model.num_classes == 0 and names:  # a backbone: no class to name (load_model's note said it has no head)
        print(f"note: DATA.LABEL_LIST = {labels}: its class names are not recorded, as the weights have no head",
              file=sys.stderr)
        names = []
    # the label list's names, or those carried over from an exported file: said as train.py and predict say them
    same_names = names_given_twice(labels or weights, dict(enumerate(names)), embedded=not labels)
    if same_names:
        print(f"warning: {same_names}", file=sys.stderr)
    if dtype is not None:
        model = model.to(dtype)
    return save_weights_file(model, out, arch=cfg.MODEL.ARCH, mean=MEAN, std=STD, class_names=names,
                             source=os.path.basename(weights))


def _carried_settings(weights: str, opts: list[str], out: str) -> tuple[object, list[str] | None]:
    """The config and class names of an exported file (its names, unless --opts sets DATA.LABEL_LIST: None, so
    that ``export`` reads that list, as strictly as with --cfg).

    Raises:
        InputError: ``weights`` is not an exported file: ``--cfg`` is needed (the one-line message says so).
    """
    from tools.inference import load_setup

    own_names = "DATA.LABEL_LIST" not in opts[0::2]
    cfg, names = load_setup(None, opts, weights, class_names=own_names, warn=False,
                            command=shlex.join(["python", "-m", "tools.export_safetensors", "--out", out]))
    return cfg, [names[c] for c in range(len(names))] if own_names else None


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m tools.export_safetensors", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cfg", default="", type=home_path, help="config YAML describing the model (optional with an "
                   "exported .safetensors, whose settings and class names are carried over)")
    p.add_argument("--weights", required=True, type=home_path, help="checkpoint path or hf:// reference")
    p.add_argument("--out", required=True, type=home_path, help="output .safetensors file")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32",
                   help="tensor type in the file (default float32)")
    p.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE config overrides")
    args = p.parse_args(opts_last(p, p.respelled(argv)))
    kept = f"{args.out} not written; an earlier file there is left as it was"  # an atomic write: whole or not at all
    on_interrupt(f"exporting: {kept}")
    from configs import load_config
    from train import INPUT_ERRORS

    before = file_version(args.out)

    def in_place() -> bool:  # the new file has been renamed over --out: the export is done, whole
        return file_version(args.out) != before

    # A scheduler's stop (SIGTERM, SIGUSR1) ends the export as a Ctrl-C does, until the rename has put the new file
    # at --out: from then on the export is done and ends as one (asked of the disk when the signal comes, as a flag
    # set after the rename would leave a gap between the two).
    try:
        with stop_signals_raise(ignored=in_place):
            check_output_path(args.out, "--out", folder=False, example="model.safetensors")  # before loading
            if not args.out.endswith(".safetensors"):  # the writer's own check came after the weights had loaded
                raise InputError(f"--out {args.out}: the file name must end in .safetensors, e.g. "
                                 f"{os.path.splitext(args.out)[0]}.safetensors")
            # an export over its own input (a --dtype change in place) would leave only the rounded weights
            check_output_not_input(args.out, "--out", [("--weights", args.weights)])
            if args.cfg:
                cfg, names = load_config(args.cfg, args.opts), None
            else:
                cfg, names = _carried_settings(args.weights, args.opts, args.out)
            meta = export(cfg, args.weights, args.out, dtype=getattr(torch, args.dtype), class_names=names)
            # Still in the block, which ignores a stop signal once the file is in place: after it, until the
            # command's finished(), such a signal would have its default action (status 143, the file whole)
            classes = (f"{meta['num_classes']} classes" if meta["num_classes"] != "0" else
                       "no classification head (features only: tools.extract_features)")
            print(f"wrote {args.out}: {meta['arch']}, {meta['num_frames']} frames of {meta['input_size']} px, "
                  f"{classes}")
    except Stopped as e:
        return stopped_during_work(e, kept)
    except KeyboardInterrupt:
        if in_place():  # a Ctrl-C once the new file was in place
            on_interrupt(f"exporting: {args.out} was written whole before the interrupt")
        raise
    except INPUT_ERRORS + (InputError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if error_writing(e, args.out):  # the write itself failed (a full disk)
            print(f"error: cannot write --out {args.out}: {e.strerror or e}", file=sys.stderr)
        else:  # a file read on the way failed (the config, the weights): not --out's fault
            print(f"error: {cannot_read(e)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    from evautil.interrupt import stdout_may_close
    sys.exit(finished(stdout_may_close(main)))  # a closed stdout stops no work; after its last line, nor a Ctrl-C
