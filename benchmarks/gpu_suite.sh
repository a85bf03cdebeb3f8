#!/usr/bin/env bash
# The GPU checks and benchmarks, in time-boxed stages, so that a short visit to a GPU machine measures rather than
# types. Run from the repository root, with DALI and the project's dependencies importable:
#
#     bash benchmarks/gpu_suite.sh [--dry-run] [--without-gpu] [--out DIR] PLAN|STAGE ...
#
# Plans:
#   smoke  (at most 4 min)  env, parity, gpu_tests, demo        -> results/smoke/ (5 files)
#   bench  (at most 5 min)  decode_sweep, train_step            -> results/bench/ (3 files)
# Full stages, each sized for 10 minutes on one H200 (-> results/<stage>/):
#   decode  loader  train  eval
# Every stage runs under `timeout` with its time box; a stage that fails or runs out of time is reported and the
# next one still runs; the exit code is 1 when any stage failed. Generated clips go to $EVA_TMP (default
# /tmp/eva_gpu_suite), never into the results. --dry-run lists the stages, their time boxes, commands and result
# files. --out DIR puts the results under DIR (a relative DIR: from where the script is run; by default results/ of
# the repository, git-ignored). Smoke and bench together write 8 files, at most two folders deep, so that a remote
# machine's results come back in one small copy; the script warns when the plans would write more. On a machine
# without an NVIDIA GPU a run is refused (exit code 2) unless --without-gpu asks for a rehearsal, whose GPU stages
# then fail or skip.
# The reference clips are read from $EVA_SHARED_DIR/data/real (default: ../shared/data/real).
set -uo pipefail
caller=$PWD
cd "$(dirname "$0")/.."

dry=0
without_gpu=0
out_root=  # results/ unless --out names a folder
args=()
while [ $# -gt 0 ]; do
    case $1 in
    # `_` and `-` alike inside a long flag, and `--out=DIR`, as every command of the project takes them
    --dry-run|--dry_run) dry=1 ;;
    --out=*) set -- --out "${1#--out=}" "${@:2}"; continue ;;
    # a bad command line is one line and exit code 2, as for the benchmarks (${2:?} said "line 28: 2: ..." and 1)
    # `--out --dry-run smoke` ran the real plan into a folder named --dry-run
    --out) case ${2:-} in ""|-*) echo "error: --out needs a folder (--out DIR), got '${2:-}'" >&2; exit 2 ;; esac
        out_root=$2; shift ;;
    --without-gpu|--without_gpu) without_gpu=1 ;;
    # the repository's own copy, where the script now runs: $0 was relative to the caller's folder
    -h|--help) sed -n '2,20p' benchmarks/gpu_suite.sh; exit 0 ;;
    -*) echo "error: unknown option $1 (options: --dry-run --without-gpu --out DIR; see --help)" >&2; exit 2 ;;
    *) args+=("$1") ;;
    esac
    shift
done
# A relative --out is the caller's, as for any command: run from elsewhere, it was made under the repository
# root, where the listing's path did not lead (the default, results/, stays the repository's). A leading ~ is the
# home folder, also where the shell leaves it (--out=~/x), as in the project's tools.
case $out_root in "~"|"~/"*) out_root=$HOME${out_root#\~} ;; esac
case $out_root in "") out_root=results ;; /*) ;; *) [ "$caller" -ef . ] || out_root=$caller/$out_root ;; esac
[ ${#args[@]} -gt 0 ] || { echo "error: name a plan or stage: bash benchmarks/gpu_suite.sh [--dry-run] [--without-gpu] [--out DIR] smoke|bench|decode|loader|train|eval ..." >&2; exit 2; }

export PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
tmp=${EVA_TMP:-/tmp/eva_gpu_suite}
# a relative EVA_TMP is the caller's too (as --out): the clips went under the repository root
case $tmp in /*) ;; *) tmp=$caller/$tmp ;; esac
shared=${EVA_SHARED_DIR:-../shared}
cores=$(nproc)

# stage -> time box in seconds
box() {
    case $1 in
    env) echo 20 ;; parity) echo 40 ;; gpu_tests) echo 120 ;; demo) echo 60 ;;
    decode_sweep) echo 170 ;; train_step) echo 120 ;;
    decode|loader|train|eval) echo 600 ;;
    esac
}

# stage -> the shell command it runs ($out is the plan's results folder)
command_for() {
    # The folders as the stage's shell must read them: a space in --out, EVA_TMP or EVA_SHARED_DIR split a flag's
    # value in two (printf %q leaves a plain path as it is); $PYTHON too, a path with a space split every stage
    local out=$(printf %q "$out") tmp=$(printf %q "$tmp") shared=$(printf %q "$shared") py=$(printf %q "$py")
    local data="DATA.ROOT $tmp/synthetic DATA.TRAIN_FILE $tmp/synthetic/train.txt DATA.VAL_FILE $tmp/synthetic/val.txt DATA.LABEL_LIST $tmp/synthetic/labels.csv"
    local clips="--codec h264 --width 340 --height 256 --frames 250 --gop 16 --num-clips 32"
    case $1 in
    env) echo "nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv; $py -m benchmarks.gpu_env" ;;
    parity) echo "$py -m benchmarks.nvdec_parity --decoder mixed --real-dir $shared/data/real --tmp $tmp/parity --json $out/nvdec_parity.json" ;;
    # At most 30 s a test (each should take a few): a hung test must not use up the whole box. SIGINT 15 s before
    # the box ends: pytest stops and still writes the junit report of the tests that ran (killed by the box's
    # SIGTERM it writes none); -v and -rA name each test's outcome in the log, --durations=0 each one's time. With
    # -m gpu the tests run quick checks first (tests/conftest.py, GPU_TEST_ORDER): a box cut short loses the least.
    # --foreground, here and in demo: a nested timeout otherwise makes a process group of its own, which the box's
    # SIGTERM and its end-of-stage check do not reach.
    gpu_tests) echo "timeout --foreground -s INT -k 10 $(( $(box gpu_tests) - 15 )) $py -m pytest -v -rA --durations=0 -m gpu tests -p no:cacheprovider --timeout 30 --junitxml $out/gpu_tests.xml" ;;
    # The demo end to end (NVDEC training, then the multi-view test) in 2 of its 32 epochs (128 steps, 2048 clips):
    # a check of the GPU route and a measurement, not the accuracy run (the demo leaves chance after ~600 steps;
    # `make demo` is the full recipe). Rehearsed on the 2-core CPU machine (PyAV route), 4 epochs took the whole
    # box: dataset 10 s, training 35 s at 140 clips/s, and the box's SIGTERM came during the plots; with 2 epochs the
    # stage ended there after 39 s, 9 s before the backstop (more to spare on 16 cores). Backstop: training gets
    # SIGTERM (checkpoint, exit 4) 12 s before the box ends, at least 5 s after it starts, so that the metrics written
    # so far still come back when it runs long. OUTPUT starts empty: an earlier run's finished demo there would be
    # resumed, and the rerun would change nothing and pass. DATA.DECODE_DEVICE gpu: without NVDEC (no libnvcuvid in
    # the container) the demo's `auto` would train on the CPU route and pass; this check is of the GPU route.
    # When the box's SIGTERM comes first (a slow dataset leaves training its 5 s), training gets it too and the
    # stage's shell outlives it (trap): the metrics are still copied, in the box's 10 s of grace.
    demo) echo "trap : TERM; rm -rf $tmp/demo && $py tools/make_synthetic_dataset.py --out $tmp/synthetic --quiet --workers $cores && timeout --foreground -k 5 \$(( (left = $(box demo) - 12 - SECONDS) > 5 ? left : 5 )) $py train.py --cfg configs/demo.yaml --opts $data OUTPUT $tmp/demo TRAIN.EPOCHS 2 TRAIN.WARMUP_EPOCHS 1 LOG.PROGRESS_BAR False LOG.TENSORBOARD False DATA.DECODE_DEVICE gpu DATA.NUM_THREADS 8 DATA.NUM_WORKERS 8 DATA.INDEX_WORKERS $cores; rc=\$?; cp $tmp/demo/metrics.jsonl $out/demo_metrics.jsonl; cp $tmp/demo/summary.json $out/demo_summary.json; exit \$rc" ;;
    # The three thread counts in one run, one JSON: the clips are generated (or found) and read once.
    decode_sweep) echo "$py -m benchmarks.decode_throughput ${clips/32/16} --data-dir $tmp/clips_b --decoders dali_mixed,pyav_np --modes tsn --batch 8 --threads 4,8,16 --repeats 3 --json $out/decode_sweep.json" ;;
    # Three timed measurements at least (every stage): a median of two is their mean, and one slow one moves it.
    train_step) echo "$py -m benchmarks.train_throughput --arch eva-1b/14 --frames 16 --batch 4 --precision bf16 --attn sdpa --checkpoint 1 --warmup 2 --steps 4 --repeats 3 --json $out/train_step.json" ;;
    # The same 32 clips twice: as generated (x264 with B-frames) and as the re-encoder writes them (none). The
    # benchmarks write clips into <data-dir>/<codec>/ with their list.txt; the re-encoder keeps that layout. The two
    # halves measure apart: the first exits 1 after its report without decord (its baseline), and that must not
    # cost the re-encoded half; the stage's exit code is still the first failure's.
    # Three repeats, not the default five: a half at five took 10 min on the 2-core CPU machine, 160 s of it
    # the single-threaded PyAV rows (by their measured rates), which more cores do not shorten (4 passes over the
    # clips instead of 6).
    decode) echo "$py -m benchmarks.decode_throughput $clips --data-dir $tmp/clips_b --batch 8 --threads $cores --repeats 3 --json $out/decode_bframes.json --plot $out/decode_bframes.png; rc=\$?; $py tools/prepare_kinetics.py reencode --src $tmp/clips_b --dst $tmp/clips_reencoded --gop 16 --no-upscale --no-progress --report-dir $tmp && cp $tmp/clips_b/h264/list.txt $tmp/clips_reencoded/h264/list.txt && $py -m benchmarks.decode_throughput --list $tmp/clips_reencoded/h264/list.txt --num-clips 32 --batch 8 --threads $cores --repeats 3 --json $out/decode_reencoded.json --plot $out/decode_reencoded.png || rc=\$?; exit \$rc" ;;
    loader) echo "taskset -c 0-$(( (cores < 8 ? cores : 8) - 1 )) $py -m benchmarks.loader_throughput $clips --data-dir $tmp/clips_b --batch 8 --test-batch 2 --batches 8 --repeats 5 --json $out/loader.json --plot $out/loader.png" ;;
    # Two measurements apart, as in decode: the loader-fed step (data_wait_pct) runs whatever the first one did.
    train) echo "$py -m benchmarks.train_throughput --arch eva-1b/14 --frames 16 --batch 4 --precision bf16 --attn sdpa,math --checkpoint 0,1 --json $out/train.json; rc=\$?; $py -m benchmarks.train_throughput --arch eva-1b/14 --frames 16 --batch 4 --precision bf16 --with-loader --codec h264 --width 340 --height 256 --clip-frames 250 --gop 16 --num-clips 32 --data-dir $tmp/clips_b --json $out/train_loader.json || rc=\$?; exit \$rc" ;;
    eval) echo "$py -m benchmarks.eval_throughput --arch eva-1b/14 $clips --data-dir $tmp/clips_b --batch 2 --json $out/eval.json --plot $out/eval.png" ;;
    esac
}

# stage -> the files it writes into $out (besides the plan's log)
results_of() {
    case $1 in
    parity) echo nvdec_parity.json ;; gpu_tests) echo gpu_tests.xml ;;
    demo) echo demo_metrics.jsonl demo_summary.json ;;
    decode_sweep) echo decode_sweep.json ;; train_step) echo train_step.json ;;
    decode) echo decode_bframes.json decode_bframes.png decode_reencoded.json decode_reencoded.png ;;
    loader) echo loader.json loader.png ;; train) echo train.json train_loader.json ;; eval) echo eval.json eval.png ;;
    esac
}

stages_of() {
    case $1 in
    smoke) echo "env parity gpu_tests demo" ;;
    bench) echo "decode_sweep train_step" ;;
    decode|loader|train|eval) echo "$1" ;;
    *) echo "error: unknown plan or stage: $1 (plans: smoke bench; stages: decode loader train eval)" >&2; return 2 ;;
    esac
}

# plan -> the files it writes into its results folder: its log, then each stage's
files_of() {
    local s
    echo "$1.log"
    for s in $(stages_of "$1"); do results_of "$s"; done
}

planned=0  # result files, over the plans given (an unknown one is refused before anything runs)
for plan in "${args[@]}"; do
    stages_of "$plan" > /dev/null || exit 2
    planned=$((planned + $(files_of "$plan" | wc -w)))
done

# Without a GPU every stage fails or skips after minutes of start-up, and the GPU tests' stage passes with all of
# its tests skipped: say so at once instead. A device node or nvidia-smi's list is enough (a container may lack
# either one). grep reads the whole list: `grep -q` left at the first GPU, and nvidia-smi, still writing (a MIG
# device's line), died of SIGPIPE, which pipefail made the pipeline's verdict: "no GPU".
if [ $dry -eq 0 ] && [ $without_gpu -eq 0 ] && ! ls /dev/nvidia[0-9]* > /dev/null 2>&1 \
        && ! nvidia-smi -L 2> /dev/null | grep '^GPU ' > /dev/null; then
    echo "error: no NVIDIA GPU on this machine (no /dev/nvidia0, and nvidia-smi lists none): the suite checks and" \
         "measures a GPU; --dry-run lists what it would run, --without-gpu runs it here anyway (its GPU stages fail" \
         "or skip)" >&2
    exit 2
fi

# The parity and GPU-test stages read the reference clips; without them they fail (parity still measures its
# synthetic clips and the seek probe; the GPU tests that need them fail one by one).
# Said in the dry run too: a rehearsal must show what the real run would lack.
if [ ! -d "$shared/data/real" ]; then
    echo "WARNING: no reference clips at $shared/data/real: set EVA_SHARED_DIR to the reference folder (the parity" \
         "and gpu_tests stages will fail without it)" >&2
fi
# Results meant to be copied back from a remote GPU machine in one small transfer: 8 files at most.
if [ $planned -gt 8 ]; then
    echo "WARNING: ${args[*]} write $planned result files, more than the 8 of smoke and bench together (sized to" \
         "copy back from a remote machine at once): run these plans in separate calls if that matters" >&2
fi

# A results folder that cannot be made (--out naming a file) left every stage without its log and its results,
# each stage still running to its end: refuse it before the first stage.
if [ $dry -eq 0 ] && ! { mkdir -p "$out_root" 2> /dev/null && [ -d "$out_root" ] && [ -w "$out_root" ]; }; then
    echo "error: --out $out_root: the results folder cannot be made or written there; give a folder this user can" \
         "write (default results/)" >&2
    exit 2
fi

# One run at a time per results folder and per $EVA_TMP: a second run started beside the first removed the first's
# results and its demo's OUTPUT, and both wrote into one log. Each folder itself is locked (no lock file among the
# results); the stages do not inherit the locks (a process they leave behind would hold them).
if [ $dry -eq 0 ] && command -v flock > /dev/null; then
    mkdir -p "$tmp" 2> /dev/null
    exec 8< "$out_root"
    busy=
    flock -n 8 || busy=$out_root
    if [ -z "$busy" ] && [ -d "$tmp" ] && ! [ "$tmp" -ef "$out_root" ]; then
        exec 9< "$tmp"
        flock -n 9 || busy="$tmp (EVA_TMP)"
    fi
    if [ -n "$busy" ]; then
        echo "error: another gpu_suite.sh run is using $busy; wait for it to end, or give this run a --out and an" \
             "EVA_TMP of its own" >&2
        exit 2
    fi
fi

status=0
for plan in "${args[@]}"; do
    stages=$(stages_of "$plan")
    out=$out_root/$plan
    total=0
    for s in $stages; do total=$((total + $(box "$s"))); done
    files=$(files_of "$plan" | xargs)
    echo "=== plan $plan: stages $stages; time boxes add up to ${total} s; results in $out/: $files" \
         "($(files_of "$plan" | wc -w) files)"
    if [ $dry -eq 0 ]; then
        mkdir -p "$out" "$tmp"
        # An earlier run's results must not pass for this run's (a stage that fails writes none of its own), and
        # its temporaries (below) must not stay
        for f in $(files_of "$plan"); do rm -f "$out/$f" "$out/.$f".*.tmp; done
    fi
    for s in $stages; do
        cmd=$(command_for "$s")
        echo "--- stage $s (time box $(box "$s") s): $cmd"
        [ $dry -eq 1 ] && continue
        log=$out/$plan.log
        start=$SECONDS
        # timeout runs the stage in a process group of its own and its SIGTERM reaches the whole group, but it
        # returns as soon as the stage's shell is gone: a process still handling the signal (training saving its
        # checkpoint, pytest writing its report) ran on into the next stage, on the same GPU, and wrote into the log
        # after this stage's verdict. The stage ends when its group is empty: 10 s more at most, then SIGKILL.
        { echo "--- stage $s: $cmd"; timeout --kill-after=10 "$(box "$s")" bash -c "$cmd" 8<&- 9<&- & group=$!
          wait $group; rc=$?; ran=$((SECONDS - start))  # before the wait for its leftover processes below
          for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 -- -$group 2> /dev/null && sleep 1 || break; done
          kill -KILL -- -$group 2> /dev/null; } >> "$log" 2>&1
        # A benchmark killed mid-write (SIGKILL) leaves its hidden temporary beside its result file (the project's
        # atomic writes: .<name>.<random>.tmp), one file more than the plan lists: its stage has ended, remove it.
        for f in $(results_of "$s"); do rm -f "$out/.$f".*.tmp; done
        took=$((SECONDS - start))
        # pytest's own count (a GPU test that skipped did not check anything): its last summary line
        counts=$( [ "$s" = gpu_tests ] && grep -E '^=+ .* in [0-9.]+s' "$log" | tail -1 \
            | sed -E 's/^=+ (.*) =+$/ (\1)/')
        if [ $rc -eq 0 ]; then
            echo "    passed in ${took} s${counts}" | tee -a "$log"
        else
            # 137 is a SIGKILL: the box's own (timeout -k sends it 10 s after its SIGTERM) or, before the box ended,
            # another one's: the kernel's out-of-memory killer or a kill -9, not a lack of time
            if [ $rc -eq 124 ] || { [ $rc -eq 137 ] && [ $ran -ge "$(box "$s")" ]; }; then
                why="ran out of time after ${took} s (time box $(box "$s") s)"
            elif [ $rc -eq 137 ]; then
                why="killed (SIGKILL, exit 137; out of memory?) after ${took} s (time box $(box "$s") s)"
            else
                why="failed with exit code $rc after ${took} s"
            fi
            echo "    FAILED: $s $why${counts} (see $log)" | tee -a "$log"
            status=1
        fi
    done
done
exit $status
