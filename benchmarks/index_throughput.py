"""Index build and load at Kinetics size: how long probing a 240k-row list takes with N workers, and how long and how
much memory it costs each of the ranks of one node to load the finished index at once.

The list's rows point, through symbolic links (one per row, so every row is a distinct file to probe and to cache),
at a few clips: given with ``--clips`` (e.g. real Kinetics-like clips) or generated. Every rank is a separate
Python process started at the same moment, as torchrun starts them, calling ``build_index`` on the list whose
cache already exists; each reports its wall time, its resident memory before and at the peak, and, measured after
that, the time of the two parts it cannot avoid: parsing the list and reading the cache file.

    python -m benchmarks.index_throughput --rows 240000 --workers 2 --ranks 8 --clips a.mp4 b.mp4 ...
    python -m benchmarks.index_throughput --quick      # CI size: a few hundred rows, 2 ranks
    python -m benchmarks.index_throughput --quick --rows 2000   # --quick's other sizes, 2000 rows

``--work-dir D --skip-build`` loads the index already built in ``D`` (by an earlier run, or by another version of
the code, whose cache this one reads or migrates) instead of probing again: two versions of the loading code can
then be compared on one build.
"""

from __future__ import annotations

import errno
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid

from benchmarks import cli, common, hardware, inputs, reporting, stats
from dali_pipelines.filelist import read_video_list
from dali_pipelines.index import BadVideoError, build_index, index_paths, probe_video
from dali_pipelines.index_store import load_cache
from evautil.files import atomic_write_text, not_a_file

_LINKS_PER_DIR = 1000  # Kinetics-like layout: class folders of a few hundred to a thousand videos

# Lower bounds of what a row and a rank cost, below what a 4000-row run measured (each rank: 54 MiB before its
# load, 500 B a row held; the list 26 B and the index file 105 B a row), so that no size that fits is refused.
_RANK_BYTES = 40 << 20
_ROW_BYTES_HELD = 300  # in each rank, and in this process, which builds the index
_ROW_BYTES_ON_DISK = 120  # the list line and the index row; the link is counted apart, as a file (an inode)


def parse_args(argv=None):
    p = common.ArgumentParser(description=__doc__, formatter_class=common.argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=240_000, help="rows in the list")
    p.add_argument("--workers", default="2", help="comma-separated probing worker counts to time the build with")
    p.add_argument("--ranks", type=int, default=8, help="processes that load the finished index at once")
    p.add_argument("--clips", type=common.home_path, nargs="*", default=[],
                   help="videos the rows link to (default: synthetic H.264)")
    p.add_argument("--work-dir", type=common.home_path, default=None,
                   help="where the links and the list go (default: a temporary folder)")
    p.add_argument("--skip-build", action="store_true",
                   help="load the index already built in --work-dir (migrated first when it is of an older schema)")
    p.add_argument("--quick", action="store_true",
                   help="smoke size: 400 rows, workers 1,2, 2 ranks (--rows, --workers, --ranks given too win)")
    p.add_argument("--json", type=common.home_path, default=None, help="write every figure here")
    p.add_argument("--plot", type=common.home_path, default=None, help="PNG bar chart of the seconds")
    p.add_argument("--load-worker", nargs=3, metavar=("LIST", "ROOT", "GO_FILE"), help=common.argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        cli.set_quick_defaults(p, argv, args, rows=400, workers="1,2", ranks=2)
    try:
        args.worker_counts = [int(x) for x in args.workers.split(",") if x.strip()]
    except ValueError:
        p.error(f"--workers: {args.workers!r} is not a comma-separated list of integers")
    if not args.worker_counts or min(args.worker_counts) < 1:
        p.error("--workers must name at least one count, each at least 1")
    cli.require_positive(p, args, ["rows", "ranks"])
    if args.skip_build and not args.work_dir:
        p.error("--skip-build needs the --work-dir of an earlier run")
    if args.skip_build and not _built_index(os.path.join(args.work_dir, "list.txt")):
        # else the rows were linked and every video probed (minutes at Kinetics size) before the run said so
        p.error(f"--skip-build: --work-dir {args.work_dir} holds no built index (list.txt and its index); run once "
                "without --skip-build to build it there")
    if not args.load_worker:
        problem = _memory_problem(args) or _disk_problem(args)
        if problem:
            p.error(problem)
    return args


def _memory_problem(args) -> str:
    """Why ``--ranks`` processes each holding an index of ``--rows`` rows cannot fit in the memory available, in
    one line ("" when they can, or when that is not known): --ranks 100000 or --rows 1000000000 started the
    build or every rank, until the machine ran out of memory."""
    from evautil.progress import format_bytes
    from tools.synthetic import available_memory

    available = available_memory()
    need = args.ranks * _RANK_BYTES + (args.ranks + 1) * args.rows * _ROW_BYTES_HELD
    if available is None or need <= available:
        return ""
    return (f"--rows {args.rows} loaded by --ranks {args.ranks} at once need at least {format_bytes(need)} of memory "
            f"(each rank holds the whole index), and {format_bytes(available)} is available; give a smaller --rows "
            "or --ranks")


def _disk_problem(args) -> str:
    """Why the links and the list of ``--rows`` rows cannot fit where they go (``--work-dir``, or the temporary
    folder), in one line ("" when they can, when they are there already, or when that is not known): the run
    linked rows until the disk or its inodes ran out, then ended in a traceback."""
    from evautil.progress import format_bytes

    if args.skip_build:  # the links were made by the run that built the index
        return ""
    folder = os.path.abspath(args.work_dir or tempfile.gettempdir())
    while not os.path.isdir(folder):  # a --work-dir made by the run: the file system it will be on
        folder = os.path.dirname(folder)
    try:
        fs = os.statvfs(folder)
    except OSError:
        return ""
    where = f"--work-dir {args.work_dir}" if args.work_dir else f"the temporary folder {folder} (give --work-dir)"
    files = args.rows + args.rows // _LINKS_PER_DIR + 2  # a link a row, a folder a thousand, the list and index
    if fs.f_files and files > fs.f_favail:  # f_files 0: a file system without an inode count
        return (f"--rows {args.rows} needs {files} new files (a link a row) and {where} has room for "
                f"{fs.f_favail}; give a smaller --rows or a --work-dir on another disk")
    need, free = args.rows * _ROW_BYTES_ON_DISK, fs.f_bavail * fs.f_frsize
    if need > free:
        return (f"--rows {args.rows} needs at least {format_bytes(need)} for its links, list and index, and {where} "
                f"has {format_bytes(free)} free; give a smaller --rows or a --work-dir on another disk")
    return ""


def _built_index(list_path: str) -> bool:
    """Whether ``list_path`` exists with an index cache beside it, of this schema or of the older one that
    ``build_index`` migrates."""
    if not os.path.isfile(list_path):
        return False
    paths = index_paths(list_path)
    return os.path.isfile(paths.cache) or os.path.isfile(paths.json_cache)


def make_links(work_dir: str, clips: list[str], rows: int) -> tuple[str, str]:
    """``rows`` symbolic links to ``clips`` (round robin) in folders of 1000 and a list naming them; returns
    ``(list_path, root)``. The links are made in a new folder renamed into place and the list is written
    atomically: made in place, a run stopped midway left half the links (or half the list) for the next run to take
    as whole, two runs in one ``--work-dir`` raced, and an earlier run's links to other clips were kept where a
    stop came before they were replaced. The index keys its rows by the linked clip's size and mtime, so a new
    link to the same clip leaves an index built through the old one valid."""
    root = os.path.join(work_dir, "videos")
    os.makedirs(work_dir, exist_ok=True)
    fresh = _unused_name(root, "tmp")
    os.mkdir(fresh)  # not mkdtemp's: its private mode (0700) kept the links from the other users of the --work-dir
    lines = []
    try:
        for i in range(rows):
            clip = os.path.abspath(clips[i % len(clips)])
            rel = os.path.join(f"class_{i // _LINKS_PER_DIR:04d}", f"video_{i:07d}{os.path.splitext(clip)[1]}")
            if i % _LINKS_PER_DIR == 0:
                os.mkdir(os.path.join(fresh, os.path.dirname(rel)))
            os.symlink(clip, os.path.join(fresh, rel))
            lines.append(f"{rel} {i // _LINKS_PER_DIR % 400}")
        _rename_folder_into_place(fresh, root)
    except BaseException:
        shutil.rmtree(fresh, ignore_errors=True)
        raise
    list_path = os.path.join(work_dir, "list.txt")
    atomic_write_text(list_path, "\n".join(lines) + "\n")
    return list_path, root


def _rename_folder_into_place(fresh: str, final: str) -> None:
    """Rename the folder ``fresh`` to ``final``, an earlier ``final`` (a whole one: it was put there so) moved aside
    and removed. A rename cannot replace a folder that holds files, so ``final`` is missing for a moment, never
    half made; another run putting its own in place meanwhile is moved aside in turn (the last one wins)."""
    while True:
        try:
            os.rename(fresh, final)  # also replaces an empty folder
            return
        except OSError as e:
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
        aside = _unused_name(final, "old")
        try:
            os.rename(final, aside)
        except FileNotFoundError:  # another run moved it aside first
            continue
        shutil.rmtree(aside, ignore_errors=True)


def _unused_name(path: str, kind: str) -> str:
    """A hidden name beside ``path`` that no other call (nor run) picks: ``.<name>.<random>.<kind>``."""
    return os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{uuid.uuid4().hex[:12]}.{kind}")


def time_build(list_path: str, root: str, workers: int, kept: bool = True) -> dict:
    """Probe the whole list from scratch (the cache removed first) with ``workers`` processes. ``kept``: the
    index stays after the run (a --work-dir); else a build stopped midway saves nothing and does not say that the
    next build reuses what it probed (the temporary folder is removed at once)."""
    paths = index_paths(list_path)
    for path in (paths.cache, paths.quarantine):
        if os.path.exists(path):
            os.remove(path)
    t0 = time.perf_counter()
    index = build_index(list_path, root, workers=workers, progress=False, save_on_stop=kept)
    seconds = time.perf_counter() - t0
    return {"name": f"build, {workers} worker(s)", "phase": "build", "workers": workers,
            "seconds": stats.summarize([seconds]), "rows_per_s": len(index) / seconds,
            "good": len(index.infos), "bad": len(index.bad), "index_mib": os.path.getsize(paths.cache) / 2**20}


def _reuse_build(list_path: str, root: str) -> None:
    """Check that the index of ``list_path`` exists (migrating an older cache once, outside the timed loads)."""
    t0 = time.perf_counter()
    index = build_index(list_path, root, workers=1, progress=False)
    if index.probed:
        raise common.InputError(f"--skip-build: {index.probed} of {len(index)} videos were not in the index of "
                                f"{list_path} (now probed); run without --skip-build to build it")
    print(f"index of {len(index)} rows found in {time.perf_counter() - t0:.1f} s (migrated if it was older)",
          flush=True)


def _status_mib(field: str) -> float:
    """A memory figure of this process from /proc/self/status (VmRSS: now, VmHWM: peak), in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def _reset_peak_rss() -> bool:
    """Restart the peak-RSS record (VmHWM) from the current RSS, so that the peak of the load is not hidden under
    the peak of the imports; False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def load_worker(list_path: str, root: str, go_file: str) -> None:
    """One rank: wait for the start signal, load the cached index, print its figures as one JSON line."""
    while not os.path.exists(go_file):
        time.sleep(0.005)
    rss_before = _status_mib("VmRSS")
    exact_peak = _reset_peak_rss()
    t0 = time.perf_counter()
    index = build_index(list_path, root, workers=1, progress=False)
    seconds = time.perf_counter() - t0
    peak = _status_mib("VmHWM") if exact_peak else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    held = _status_mib("VmRSS")
    t1 = time.perf_counter()
    read_video_list(list_path, root)
    list_s = time.perf_counter() - t1
    t2 = time.perf_counter()
    load_cache(index_paths(list_path).cache, os.path.abspath(root))
    cache_s = time.perf_counter() - t2
    print(json.dumps({"seconds": seconds, "probed": index.probed, "rows": len(index), "rss_before_mib": rss_before,
                      "peak_rss_mib": peak, "peak_increase_mib": peak - rss_before,
                      "held_increase_mib": held - rss_before, "list_parse_s": list_s, "cache_read_s": cache_s}))


def time_load(list_path: str, root: str, ranks: int) -> list[dict]:
    """Start ``ranks`` loader processes, release them together, collect their figures."""
    with tempfile.TemporaryDirectory() as tmp:
        go = os.path.join(tmp, "go")
        cmd = [sys.executable, "-m", "benchmarks.index_throughput", "--load-worker", list_path, root, go]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")])))
        procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
                 for _ in range(ranks)]
        try:
            time.sleep(1.0)
            for p in procs:  # every rank has imported and sits in its wait loop before the start signal
                _wait_for_idle_start(p)
            open(go, "w").close()
            results = []
            for r, p in enumerate(procs):
                out, err = p.communicate(timeout=3600)
                if p.returncode != 0:
                    raise RuntimeError(f"rank {r} failed (exit {p.returncode}): {err.strip()[-2000:]}")
                d = json.loads(out.strip().splitlines()[-1])
                d.update(name=f"load, rank {r} of {ranks}", phase="load", rank=r,
                         seconds=stats.summarize([d["seconds"]]))
                results.append(cli.measured(d))
        finally:  # a rank still waiting for the start signal (the run stopped before it) would wait for ever
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.communicate()
    return results


def _wait_for_idle_start(proc: subprocess.Popen, timeout: float = 120.0) -> None:
    """Wait until ``proc`` has finished importing (its CPU use falls to its polling loop's) or has died."""
    import psutil

    t0 = time.perf_counter()
    try:
        ps = psutil.Process(proc.pid)
        while time.perf_counter() - t0 < timeout and proc.poll() is None:
            if ps.cpu_percent(interval=0.2) < 20.0:
                return
    except psutil.Error:
        return


def _check_videos(clips: list[str]) -> None:
    """An :class:`InputError` naming the first of ``clips`` the index cannot read, with the probe's reason: every
    row linked to it was probed as bad, and the loads of an index of bad rows were timed and passed (exit code 0)."""
    for clip in clips:
        try:
            probe_video(clip)
        except BadVideoError as e:
            raise common.InputError(f"--clips: {clip} is not a video the index can read ({e}); give video files")


def run_benchmark(args) -> dict:
    own_dir = args.work_dir is None
    work_dir = args.work_dir or tempfile.mkdtemp(prefix="index_bench_")
    try:
        if args.clips:
            clips = [os.path.abspath(c) for c in args.clips]
            missing = [c for c in clips if not os.path.isfile(c)]
            if missing:  # a folder (a folder of clips given for the clips) is said to be one, not missing
                raise common.InputError("--clips: " + "; ".join(f"{c} {not_a_file(c)}" for c in missing)
                                        + "; give video files")
            _check_videos(clips)
            desc = {"input": "clips", "clips": [os.path.basename(c) for c in clips]}
        else:
            made = inputs.make_synthetic_clips(os.path.join(work_dir, "clips"), 2, codec="h264", size=(96, 64),
                                               num_frames=24, gop=8)
            clips = [c[0] for c in made]
            desc = {"input": "synthetic", "clips": [os.path.basename(c) for c in clips]}
        t0 = time.perf_counter()
        list_path, root = make_links(work_dir, clips, args.rows)
        print(f"{args.rows} rows linked to {len(clips)} clips in {time.perf_counter() - t0:.1f} s", flush=True)
        results = []
        for n in [] if args.skip_build else args.worker_counts:
            results.append(cli.measured(time_build(list_path, root, n, kept=not own_dir)))
            print(f"built with {n} worker(s): {results[-1]['seconds'].median:.1f} s", flush=True)
        if args.skip_build:
            _reuse_build(list_path, root)
        results += time_load(list_path, root, args.ranks)
        return {"benchmark": "index_throughput", "machine": hardware.machine_info(), "input": desc, "rows": args.rows,
                "ranks": args.ranks,
                "settings": {k: getattr(args, k) for k in ("rows", "workers", "ranks", "skip_build", "quick")},
                "list_mib": os.path.getsize(list_path) / 2**20,
                "index_mib": os.path.getsize(index_paths(list_path).cache) / 2**20, "results": results}
    finally:
        if own_dir:
            shutil.rmtree(work_dir, ignore_errors=True)


def report(payload: dict) -> str:
    builds = [r for r in payload["results"] if r["phase"] == "build"]
    loads = [r for r in payload["results"] if r["phase"] == "load"]
    lines = [f"Index of a {payload['rows']}-row list ({payload['list_mib']:.1f} MiB, index file "
             f"{payload['index_mib']:.1f} MiB) linking to {', '.join(payload['input']['clips'])}; "
             f"{hardware.machine_line(payload['machine'])}", ""]
    if builds:
        lines.append(reporting.markdown_table(
            [{**r, "s": r["seconds"].median, "good": str(r["good"]), "bad": str(r["bad"])} for r in builds],
            [("name", "build"), ("s", "seconds"), ("rows_per_s", "rows/s"), ("good", "good"), ("bad", "bad"),
             ("index_mib", "index file MiB")]))
        lines.append("")
    lines.append(reporting.markdown_table(
        [{**r, "s": r["seconds"].median} for r in loads],
        [("name", f"load, {payload['ranks']} ranks at once"), ("s", "seconds"), ("rss_before_mib", "RSS before MiB"),
         ("peak_increase_mib", "peak increase MiB"), ("held_increase_mib", "increase still held MiB"),
         ("list_parse_s", "list parse s (alone)"), ("cache_read_s", "cache read s (alone)")]))
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.load_worker:
        load_worker(*args.load_worker)
        return 0
    return cli.run_main(args, run_benchmark, report, "seconds", "seconds",
                        lambda p: f"index of {p['rows']} rows: build and per-rank load", ["seconds"])


if __name__ == "__main__":
    from evautil.interrupt import stdout_may_close
    sys.exit(stdout_may_close(main, printing_only_without=("--json", "--plot")))  # | head: done at once
