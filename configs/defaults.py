"""Every configuration key of the project, with its default and what it does.

Experiment files in ``configs/*.yaml`` override only what they change. ``configs.load_config`` merges a YAML
file and ``KEY VALUE`` overrides onto a clone of this tree, maps the original code's legacy keys, validates,
and freezes the result. Key names follow the original EVA video code where it had the key.
"""

from yacs.config import CfgNode as CN

_C = CN()

# Other YAML files to merge first (paths relative to the file that names them), as in the original configs.
_C.BASE = [""]

# ---------------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------------
_C.DATA = CN()
# Directory that the video paths in the file lists are relative to.
_C.DATA.ROOT = ""
# File lists in the original format: one video per line, "<relative path, may contain spaces> <integer label>".
# Relative list paths are resolved against the current working directory.
_C.DATA.TRAIN_FILE = ""
_C.DATA.VAL_FILE = ""
# Free-form dataset name (e.g. kinetics400): named in the training log and in summary.json's `dataset`.
_C.DATA.DATASET = "kinetics400"
# Side of the square clip fed to the model, in pixels.
_C.DATA.INPUT_SIZE = 224
# Frames per clip (T).
_C.DATA.NUM_FRAMES = 8
# Number of classes; labels must lie in [0, NUM_CLASSES).
_C.DATA.NUM_CLASSES = 400
# Optional labels CSV ("id,name" rows, one optional header, ids exactly 0..NUM_CLASSES-1, checked at start-up):
# class names in the predictions files and plots, and in an exported model's metadata.
_C.DATA.LABEL_LIST = ""
# Frames per tubelet of the patch embedding (the Conv3d's temporal kernel and stride).
_C.DATA.TUBELET_SIZE = 1
# Where videos are decoded: "auto" (GPU/NVDEC when CUDA is available, else CPU), "gpu" or "cpu".
_C.DATA.DECODE_DEVICE = "auto"
# Decoder of the videos that go to the CPU (every video on a CPU machine, those NVDEC cannot take on a GPU), chosen
# per video: "auto" (DALI's CPU decoder for VP8/VP9/MJPEG, PyAV for the rest), "dali" (DALI's CPU decoder only;
# a list with other codecs is an error) or "pyav" (PyAV in worker processes, any codec).
_C.DATA.CPU_DECODER = "auto"
# Codecs sent to NVDEC (FFmpeg names, e.g. ["h264", "hevc"]); empty: every codec NVDEC decodes on this GPU.
_C.DATA.NVDEC_CODECS = []
# Deepest bit depth sent to NVDEC (8, 10 or 12). Deeper streams go to the CPU; 8 by default because DALI 2.4's mixed
# decoder asks NVDEC for 8-bit NV12 output: deeper streams are untested there (a video that fails on NVDEC is retried
# on the CPU route, at the cost of a pipeline rebuild).
_C.DATA.NVDEC_MAX_BIT_DEPTH = 8
# On a GPU machine, warn at start-up when more than this share of a list will be decoded on the CPU (NVDEC missing,
# or videos it cannot take), naming the reasons; with STRICT it is an error.
_C.DATA.CPU_ROUTE_MAX_SHARE = 0.1
# On DALI's CPU decoder, hand it only the packets the sampled frames need (from each one's preceding keyframe up
# to it) instead of the whole file: that decoder never seeks, so it would decode every frame up to the last
# sampled one. VP8/VP9/MJPEG only; output is pixel-identical. About 1.35x more clips per CPU-second in training on
# 250-frame VP9 clips (docs/PERFORMANCE.md).
_C.DATA.CPU_PACK_GOPS = True
# The same cut for NVDEC: VP8/VP9 as IVF, H.264/HEVC remuxed into MP4 (B-frames included). DALI 2.4's NVDEC decoder
# is likely not to seek either (the parity benchmark's seek probe measures it). Off until a GPU run has checked the
# cut streams against the whole files on NVDEC (tests/test_gpu_pipelines.py); checked on the CPU with PyAV.
_C.DATA.NVDEC_PACK_GOPS = False
# Threads of each DALI pipeline (CPU operators and, on the GPU, host-side work of the mixed decoder).
_C.DATA.NUM_THREADS = 4
# Threads of the GPU (NVDEC) decoder: DALI's mixed decoder runs one NVDEC session per thread of its pipeline, so
# on the NVDEC route the pipeline gets max(NUM_THREADS, NVDEC_THREADS) threads. An H100/H200 has 7 NVDEC engines.
_C.DATA.NVDEC_THREADS = 8
# Pin the NVDEC decoder's threads to the GPU's CPU cores (DALI's 'affine'; it asks NVML for a CPU mask, which
# fails in some virtual machines at the first batch). Off by default.
_C.DATA.NVDEC_AFFINE = False
# Workers that read videos for the NVDEC graph (threads) or, on the CPU routes, decode them (processes: DALI's CPU
# decoder or PyAV; 0 decodes in the main process).
_C.DATA.NUM_WORKERS = 2
# The longest the loader waits for one video to be read (NVDEC route) or decoded (CPU routes), in seconds; 0 waits
# for ever. A video that takes longer is left out of the run (a file system that stopped answering, a decoder that
# does not end; the next run tries it again) and the decode workers are replaced; three in a row end the run.
# With NUM_WORKERS 0 the CPU routes decode in the main process, where nothing can stop them. Also the longest one
# video's probe may take while the index is built (left out of that build only; one index worker too) or
# before extract_features' windows (the video failed, tried again by the next run), and the longest a lookup (stat)
# of a listed file may take (no answer: the build stops with an error naming it).
_C.DATA.VIDEO_TIMEOUT_S = 300.0
# Batches the DALI pipeline prepares ahead of the one being consumed.
_C.DATA.PREFETCH = 2
# Temporal sampling: "tsn" (one random frame per segment, the original) or "dense" (NUM_FRAMES frames
# FRAME_INTERVAL apart from a random start, as in SlowFast/VideoMAE recipes). The test views follow it too: segment
# centres, or dense clips at evenly spaced starts (TEST.SAMPLING).
_C.DATA.SAMPLING = "tsn"
# Stride between sampled frames for dense sampling.
_C.DATA.FRAME_INTERVAL = 4
# Processes that probe videos when a dataset index is built (0: one per CPU core this process may use), and before
# extract_features' windows (0: those cores shared among the node's ranks, which probe at once).
_C.DATA.INDEX_WORKERS = 0
# Fully decode every video while indexing (slow, catches corruption in the middle of a file). Without it the
# probe demuxes every packet and decodes the first frame.
_C.DATA.INDEX_FULL_DECODE = False
# Treat unreadable or missing videos as an error instead of quarantining them and going on, and more than
# CPU_ROUTE_MAX_SHARE of a list decoded on the CPU of a GPU machine as an error instead of a warning.
_C.DATA.STRICT = False
# Data type of the clips handed to the model: "auto" (float16 on GPU, but float32 with TRAIN.PRECISION fp32; float32
# on CPU), "float16", "float32".
_C.DATA.OUTPUT_DTYPE = "auto"

# ---------------------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------------------
_C.MODEL = CN()
# Named preset from models.ARCHS: "eva-1b/14" is the original EVA ViT-g/14; smaller ones exist for tests/demos.
_C.MODEL.ARCH = "eva-1b/14"
# Dropout after the positional embedding and in the MLP / attention projection (0 in every original recipe).
_C.MODEL.DROP_RATE = 0.0
# Dropout on the attention probabilities.
_C.MODEL.ATTN_DROP_RATE = 0.0
# Stochastic depth: block i drops its residual branch with probability linspace(0, rate, depth)[i].
_C.MODEL.DROP_PATH_RATE = 0.1
# Checkpoint to initialise from before training ("", None or null for none). .pth/.pt (torch.save) or .safetensors.
_C.MODEL.PRETRAINED = ""
# How MODEL.PRETRAINED is converted: "eva" (EVA image checkpoint into a video model) or "eva_k722" (a video
# checkpoint; positional embedding resampled to this model's frames and grid; head mapped or dropped).
_C.MODEL.PRETRAINED_MODE = "eva_k722"
# Integer .npy array selecting this dataset's classes from a larger pretrained head (e.g. K722 -> K400).
_C.MODEL.CLASS_MAPPING = ""
# Frames and input size (px) that MODEL.PRETRAINED was trained at, which tell the grid of its positional table
# (0: from the checkpoint's saved config, else the model's own grid when the token counts agree; a count that
# fits several grids is refused). The original's MYCLIP.FT_FRAMES / FT_IMAGE_SIZE set these when given.
_C.MODEL.PRETRAINED_FRAMES = 0
_C.MODEL.PRETRAINED_INPUT_SIZE = 0
# Average the patch tokens (not the class token) before the head, as the original does.
_C.MODEL.USE_MEAN_POOLING = True
# Multiplier of the freshly initialised head weights and bias.
_C.MODEL.INIT_SCALE = 0.001
# Stop gradients into the patch embedding (original MYCLIP.STOP_GRAD_CONV1).
_C.MODEL.STOP_GRAD_CONV1 = False
# Attention kernel: "sdpa" (torch scaled_dot_product_attention: flash / memory-efficient on GPU) or "math"
# (explicit softmax(QK^T)V with fp32 logits, the original's formulation).
_C.MODEL.ATTN_IMPL = "sdpa"

# ---------------------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------------------
_C.TRAIN = CN()
_C.TRAIN.EPOCHS = 30
# Linear warmup length in epochs (fractions allowed); the schedule steps once per optimizer step.
_C.TRAIN.WARMUP_EPOCHS = 5.0
# AdamW's decoupled weight decay, below 1 (each step shrinks the decayed weights by its LR x this).
_C.TRAIN.WEIGHT_DECAY = 0.05
# Peak learning rate (above 0), absolute (not scaled with the batch size, as in the original).
_C.TRAIN.LR = 8.0e-6
# LR at the first warmup step (at most LR).
_C.TRAIN.WARMUP_START_LR = 0.0
# LR at the end of the cosine (at most LR); 0 means LR / 100 (the original's rule).
_C.TRAIN.LR_MIN = 0.0
# Clips per process per micro-batch.
_C.TRAIN.BATCH_SIZE = 8
# Micro-batches per optimizer step (DDP gradient sync only on the last one).
_C.TRAIN.ACCUMULATION_STEPS = 1
# Gradient checkpointing of every transformer block (non-reentrant).
_C.TRAIN.USE_CHECKPOINT = False
# Resume from the newest complete checkpoint in OUTPUT when one exists.
_C.TRAIN.AUTO_RESUME = True
# Resume even when keys that define the run (data, model, seed, schedule, augmentation) differ from the config
# saved in the checkpoint. Off: such a resume stops and lists the differences. On: the new values run from the
# checkpoint's step (optimizer hyperparameters and the LR schedule are taken from the new config).
_C.TRAIN.ALLOW_CONFIG_CHANGE = False
# LR schedule: "cosine" (with linear warmup).
_C.TRAIN.LR_SCHEDULER = CN()
_C.TRAIN.LR_SCHEDULER.NAME = "cosine"
# Optimizer: AdamW with the original betas and eps.
_C.TRAIN.OPTIMIZER = CN()
_C.TRAIN.OPTIMIZER.NAME = "adamw"
_C.TRAIN.BETAS = (0.9, 0.98)
_C.TRAIN.EPS = 1.0e-6
# Implementation: "auto" (torch fused AdamW on CUDA, plain on CPU), "torch", or "apex" (apex FusedAdam; an
# error when apex is not installed).
_C.TRAIN.FUSED_OPTIMIZER = "auto"
# Layer-wise LR decay factor (1.0: off). Layer ids follow the original: embeddings 0, block k -> k+1, rest last.
_C.TRAIN.LAYER_WISE_DECAY = 1.0
# Numeric precision: "auto" (bf16 autocast on a GPU with native bf16, compute capability 8.0 and up; fp16 with a
# gradient scaler on an older one; fp32 on CPU), "bf16", "fp16" (with a gradient scaler), "fp32".
_C.TRAIN.PRECISION = "auto"
# Original key (apex opt level), accepted for old configs when PRECISION is "auto": O0 -> "fp32"; O1/O2/O3 stay
# "auto" (mixed precision on the GPU, which is what O1 asked for; bf16 replaces apex's fp16 where the GPU has it).
_C.TRAIN.OPT_LEVEL = ""
# Clip the global gradient norm to this value (0: off; the original does not clip).
_C.TRAIN.CLIP_GRAD = 0.0
# Compile the model with torch.compile.
_C.TRAIN.COMPILE = False
# Keep an exponential moving average of the weights (evaluated instead of the raw weights when on). EMA_DECAY must
# then be below 1: at 1 the average never moves.
_C.TRAIN.EMA = False
_C.TRAIN.EMA_DECAY = 0.9999
# On a non-finite loss (or non-finite gradients under a finite loss, bf16/fp32: fp16's loss scaler skips those
# steps itself, counted as skipped too): False stops the run naming the step and the last good checkpoint; True
# skips the step (no update) and counts it.
_C.TRAIN.SKIP_NONFINITE = False

# ---------------------------------------------------------------------------------------------------------------
# Augmentation and losses
# ---------------------------------------------------------------------------------------------------------------
_C.AUG = CN()
# Label smoothing of the (possibly mixed) targets.
_C.AUG.LABEL_SMOOTH = 0.1
# Probability that a clip gets colour jitter (brightness 0.4, contrast 0.4, saturation 0.2, hue 0.1).
_C.AUG.COLOR_JITTER = 0.8
# Draw jitter factors per frame (the original's behaviour, flickers) instead of once per clip.
_C.AUG.JITTER_PER_FRAME = False
# Probability that a clip is turned to grayscale.
_C.AUG.GRAY_SCALE = 0.2
# Probability of a horizontal flip of the whole clip.
_C.AUG.FLIP = 0.5
# MultiScaleCrop scales (fractions of the short side after resizing it to INPUT_SIZE*256/224).
_C.AUG.CROP_SCALES = (1.0, 0.875, 0.75, 0.66)
# Mixup alpha (0: off) and CutMix alpha (0: off); when both are on, SWITCH_PROB picks CutMix per batch.
_C.AUG.MIXUP = 0.8
_C.AUG.CUTMIX = 1.0
_C.AUG.MIXUP_SWITCH_PROB = 0.5
# Mixup/CutMix partner of each clip: "random" (the original's x[randperm(B)]; a clip can be its own partner, half
# the time at a per-GPU batch of 2) or "derangement" (never itself, which mixes more than the original).
_C.AUG.MIXUP_PARTNERS = "random"

# ---------------------------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------------------------
_C.TEST = CN()
# Temporal clips and spatial crops (1 or 3) per video; scores are the mean of per-view softmax.
_C.TEST.NUM_CLIP = 1
_C.TEST.NUM_CROP = 1
# Temporal placement of the clips: "uniform" (deterministic) or "random" (the original's jittered clips; like the
# original, a single clip is placed at the segment centres either way).
_C.TEST.SAMPLING = "uniform"
# Videos per process per evaluation batch.
_C.TEST.BATCH_SIZE = 2
# Evaluate only (also set by --only_test).
_C.TEST.ONLY_TEST = False
# Validate (with NUM_CLIP x NUM_CROP views) every this many epochs and after the last one (0: only after the last).
# best.pth and best_top1 come from these validations only.
_C.TEST.EVAL_FREQ = 1
# Views of the final test after the last epoch's validation (the original hard-codes 4 clips x 3 crops); 0 skips
# it. Reported apart from best (final_top1); with the validation's views, one pass serves both.
_C.TEST.FINAL_NUM_CLIP = 4
_C.TEST.FINAL_NUM_CROP = 3

# ---------------------------------------------------------------------------------------------------------------
# Logging and telemetry
# ---------------------------------------------------------------------------------------------------------------
_C.LOG = CN()
# Write TensorBoard event files under OUTPUT/tensorboard.
_C.LOG.TENSORBOARD = True
# Sample GPU and NVDEC utilisation through NVML (NVIDIA GPUs only).
_C.LOG.NVML = True
# Show a progress bar with ETA on rank 0.
_C.LOG.PROGRESS_BAR = True

# ---------------------------------------------------------------------------------------------------------------
# Legacy keys of the original code's configs, accepted so its YAML files load. USE_MEAN_POOLING and
# STOP_GRAD_CONV1 are copied into MODEL, FT_FRAMES / FT_IMAGE_SIZE into MODEL.PRETRAINED_FRAMES / INPUT_SIZE
# (only when a YAML file or --opts sets them, and not the MODEL key after them: --opts MYCLIP.FT_FRAMES 16 over a
# file's PRETRAINED_FRAMES 8 gives 16); the rest are unused (see configs/__init__.py). The original's keys
# that are not in this tree (MODEL.INIT_VALUES, MODEL.FIX_TEXT, ...) are handled in configs/original_keys.py.
# ---------------------------------------------------------------------------------------------------------------
_C.MYCLIP = CN()
_C.MYCLIP.USE_LEARNABLE_POS_EMB = True
_C.MYCLIP.STOP_GRAD_CONV1 = False
_C.MYCLIP.USE_MEAN_POOLING = True
_C.MYCLIP.USE_TEXT_EMBED = False
_C.MYCLIP.FT_FRAMES = 8
_C.MYCLIP.FT_IMAGE_SIZE = 224
# Read so the original's YAML files load, and ignored, as the original ignored it (its default, 3, did nothing):
# activation checkpointing is TRAIN.USE_CHECKPOINT, every block checkpointed whole, here as in the original.
_C.MYCLIP.CHECKPOINT_SEGMENTS = 1

# ---------------------------------------------------------------------------------------------------------------
# Run
# ---------------------------------------------------------------------------------------------------------------
# Output directory: checkpoints, metrics.jsonl, TensorBoard logs, the resolved config, predictions.
_C.OUTPUT = "output"
# Save a checkpoint every SAVE_FREQ epochs (and after the last one).
_C.SAVE_FREQ = 1
# Also save every SAVE_STEPS optimizer steps (0: off), for resuming mid-epoch.
_C.SAVE_STEPS = 0
# Also save mid-epoch when this many minutes have passed since the last checkpoint (0: off), so a crash or a
# preemption without warning loses at most this much work. Checked at optimizer steps, agreed by all ranks.
_C.SAVE_MINUTES = 0.0
# Keep this many most recent checkpoints (the best one is kept apart).
_C.KEEP_LAST = 2
# Log every PRINT_FREQ optimizer steps.
_C.PRINT_FREQ = 10
# Base seed: data order, augmentation, mixup and initialisation all derive from it.
_C.SEED = 1024


def get_cfg_defaults() -> CN:
    """A fresh, mutable copy of the defaults."""
    return _C.clone()
