#!/usr/bin/env bash
# The GPU checks and benchmarks of docs/PERFORMANCE.md in one script, stage by stage, so that a GPU machine's time
# goes to measuring rather than typing. Run from the repository root:
#
#     bash benchmarks/gpu_suite.sh RESULTS_DIR [STAGE ...]
#
# Stages (default: all, in this order; each stays well under 10 minutes on one H200):
#   env      GPU, driver, NVDEC library, versions
#   tests    the GPU-marked tests (NVDEC decode exactness vs PyAV, mixed-backend loader, CUDA model paths)
#   decode   decode-only throughput: NVDEC vs DALI CPU vs PyAV, 340x256 H.264, keyframe every 16 and 250 frames
#   loader   our loader vs the original CPU pipeline, train and 4x3 test modes, same CPU cores
#   train    EVA-1B/14 training step: SDPA vs math, checkpointing, torch.compile, and fed by the real loader
#   eval     multi-view 4x3 evaluation: decode once vs per view, loader + model
# Every stage writes RESULTS_DIR/<stage>.log and, for benchmarks, RESULTS_DIR/<stage>*.json / .png.
set -uo pipefail
out=${1:?usage: bash benchmarks/gpu_suite.sh RESULTS_DIR [STAGE ...]}
shift
stages=${*:-env tests decode loader train eval}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
cores=$(( $(nproc) < 8 ? $(nproc) : 8 ))
pin="taskset -c 0-$((cores - 1))"   # the same cores for our loader and the CPU baseline
status=0

run() {  # run NAME COMMAND...: log to $out/NAME.log, remember a failure, go on with the next stage
    local name=$1; shift
    echo "=== $name: $*" | tee -a "$out/$name.log"
    "$@" 2>&1 | tee -a "$out/$name.log"
    local rc=${PIPESTATUS[0]}
    [ "$rc" -eq 0 ] || { echo "=== $name failed with exit code $rc" | tee -a "$out/$name.log"; status=1; }
}

for stage in $stages; do
    case $stage in
    env)
        run env nvidia-smi
        run env "$py" -c "import ctypes; [ctypes.CDLL(n) for n in ('libcuda.so.1', 'libnvcuvid.so.1')]; print('libcuda and libnvcuvid load')"
        run env "$py" -c "import torch, nvidia.dali as d, av; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0)); print('DALI', d.__version__, 'PyAV', av.__version__)"
        ;;
    tests)
        run tests "$py" -m pytest -q -m gpu tests -p no:cacheprovider
        ;;
    decode)
        for gop in 16 250; do
            run decode "$py" -m benchmarks.decode_throughput --codec h264 --width 340 --height 256 --frames 250 \
                --gop "$gop" --num-clips 32 --batch 8 --threads 8 --data-dir "$out/clips_gop$gop" \
                --json "$out/decode_gop$gop.json" --plot "$out/decode_gop$gop.png"
        done
        for batch in 1 4 16; do
            run decode "$py" -m benchmarks.decode_throughput --codec h264 --width 340 --height 256 --frames 250 \
                --gop 16 --num-clips 32 --batch "$batch" --threads 4 --decoders dali_mixed --modes tsn \
                --data-dir "$out/clips_gop16" --json "$out/decode_b$batch.json"
        done
        ;;
    loader)
        run loader $pin "$py" -m benchmarks.loader_throughput --codec h264 --width 340 --height 256 --frames 250 \
            --gop 16 --num-clips 32 --batch 8 --test-batch 2 --batches 8 --repeats 5 \
            --json "$out/loader.json" --plot "$out/loader.png"
        ;;
    train)
        run train "$py" -m benchmarks.train_throughput --arch eva-1b/14 --frames 16 --batch 4 --precision bf16 \
            --attn sdpa,math --checkpoint 0,1 --json "$out/train.json"
        run train "$py" -m benchmarks.train_throughput --arch eva-1b/14 --frames 16 --batch 4 --precision bf16 \
            --compile 1 --json "$out/train_compile.json"
        run train $pin "$py" -m benchmarks.train_throughput --arch eva-1b/14 --frames 16 --batch 4 --precision bf16 \
            --with-loader --codec h264 --clip-frames 250 --gop 16 --num-clips 32 --json "$out/train_loader.json"
        ;;
    eval)
        run eval "$py" -m benchmarks.eval_throughput --arch eva-1b/14 --codec h264 --frames 250 --gop 16 \
            --num-clips 16 --batch 2 --json "$out/eval.json" --plot "$out/eval.png"
        ;;
    *)
        echo "unknown stage: $stage (stages: env tests decode loader train eval)" >&2
        exit 2
        ;;
    esac
done
exit $status
