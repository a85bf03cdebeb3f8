"""The report of ``nvdec_parity``: what a run has found so far (:class:`Report`), saved as JSON (``--json``) after
every step so that a stopped run still leaves one, and printed at the end (:func:`print_report`): the table of the
clips, then the numbering and seek probes' lines."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from benchmarks import hardware, reporting
from evautil.progress import counted


@dataclass
class Report:
    """What the run has found so far, and where it goes (``json_path``: ``--json``, None without)."""

    decoder: str
    json_path: str | None
    machine: dict
    results: list[dict] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    numbering: list[dict] = field(default_factory=list)
    seek: dict | None = None
    finished: bool = False

    def save(self, seconds: float) -> None:
        """The report so far: written after every clip, so that a run stopped by its time box still leaves one."""
        if self.json_path:
            # "benchmark" and "machine" as in every benchmark's JSON; its rows are "clips"
            reporting.write_json(self.json_path, {"benchmark": "nvdec_parity", "decoder": self.decoder,
                                                  "machine": self.machine, "seconds": seconds,
                                                  "complete": self.finished, "clips": self.results,
                                                  "failures": self.failures, "skipped": self.skipped,
                                                  "numbering": self.numbering, "seek_probe": self.seek})


def print_report(report: Report, clips: int, seconds: float, matrices: Iterable[str]) -> None:
    """The table of the clips, their failures and skips, then the numbering and seek probes' lines.
    ``matrices``: the names of the YUV-to-RGB matrices, in the order of each row's ``mean_abs_diff_by_matrix``."""
    print(hardware.machine_line(report.machine))
    print(f"DALI decoder '{report.decoder}' against a sequential PyAV decode, {counted(clips, 'clip')}, "
          f"{seconds:.1f} s\n")
    print(reporting.markdown_table(
        [dict(r, found=f"{r['found']}/{r['asked']}", b_frames="yes" if r["b_frames"] else "no",
              min_corr=f"{r['min_corr']:.4f}", mean_abs_diff=f"{r['mean_abs_diff']:.2f}",
              max_abs_diff=f"{r['max_abs_diff']:.2f}",
              best_matches=" ".join(map(str, r["best_matches"])), indices=" ".join(map(str, r["indices"])),
              matrix=f"{r['matrix']} (" + " / ".join(f"{d:.2f}" for d in r["mean_abs_diff_by_matrix"].values()) + ")")
         for r in report.results],
        [("clip", "clip"), ("codec", "codec"), ("size", "size"), ("b_frames", "B-frames"), ("indices", "indices asked"),
         ("best_matches", "best-matching PyAV frame"), ("found", "found"), ("min_corr", "min corr"),
         ("mean_abs_diff", "mean |diff|"), ("max_abs_diff", "max |diff|"),
         ("matrix", f"closer to ({' / '.join(matrices)} mean |diff|)")]))
    for f in report.failures:
        print(f"FAILED {f['clip']}: {f['error']}")
    if report.skipped:  # each named on stderr before the comparison
        print(f"skipped {counted(len(report.skipped), 'clip')} in codecs DALI's CPU decoder does not take "
              f"({', '.join(sorted({f['codec'] for f in report.skipped}))}): see above")
    _print_numbering(report.numbering)
    _print_seek(report.seek)


def _print_numbering(rows: list[dict]) -> None:
    print("\nfiles cut without re-encoding and streams NVDEC may number otherwise, decoded whole (not part of the "
          "exit code):")
    for r in rows:
        verdict = f"the NVDEC route keeps it off NVDEC: {'yes' if r.get('kept_off_nvdec') else 'no'}"
        if "error" in r:  # the verdict is the route's, found before the decode failed
            print(f"  {r['clip']} ({r['cut']}): FAILED {r['error']}"
                  + (f"; {verdict}" if "kept_off_nvdec" in r else ""))
        elif "decoded_shapes" in r:
            print(f"  {r['clip']} ({r['cut']}): frames {r['indices']} decoded as "
                  f"{' and '.join('x'.join(map(str, shape)) for shape in r['decoded_shapes'])}")
        else:
            shift = "several" if r["shift"] is None else f"{r['shift']:+d}"
            print(f"  {r['clip']} ({r['cut']}): asked {' '.join(map(str, r['indices']))}, best-matching PyAV frames "
                  f"{' '.join(map(str, r['best_matches']))}: shift {shift}; {verdict}")


def _print_seek(seek: dict) -> None:
    if "error" in seek:
        print(f"\nseek probe FAILED: {seek['error']}")
    else:
        print(f"\nseek probe ({seek['clip']}, {seek['copies']} copies, keyframe every {seek['gop']}): frame "
              f"{seek['late_index']} took {seek['late_over_early']:.1f}x frame {seek['early_index']}'s time "
              f"({seek['late_s'] * 1e3:.0f} / {seek['early_s'] * 1e3:.0f} ms; frame 0, the set-up, "
              f"{seek['setup_s'] * 1e3:.0f} ms); beyond the set-up {seek['late_over_early_beyond_setup']:.1f}x "
              f"(seeking {seek['if_seeking']:.1f}x, from frame 0 {seek['if_decoding_from_frame_0']:.0f}x): "
              f"{seek['verdict']}; from the GOP cut "
              f"{seek['late_cut_s'] * 1e3:.0f} ms ({seek['late_over_cut']:.1f}x faster)")

