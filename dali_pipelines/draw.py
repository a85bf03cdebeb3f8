"""The per-sample draw: which frames of a video to decode and how to augment them, as a pure function.

``draw_sample(settings, video, seed, epoch)`` depends on nothing but its arguments: the generator is keyed by
(seed, epoch, row) (``sampling.sample_rng``), so a sample's clip and augmentation do not depend on the batch it is
in, the rank, the number of workers or what was drawn before. That is what makes resume exact and lets a
quarantined video's substitute be drawn anywhere.

No DALI call here (the records it fills are ``graph_records``'); nothing in this module reads a file.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import augment, sampling
from .graph_records import TestParams, TrainParams

__all__ = ["DrawSettings", "VideoRef", "Sample", "draw_sample", "train_params"]


@dataclass(frozen=True)
class DrawSettings:
    """The config values the draw uses (read once from the config by :meth:`from_config`)."""

    training: bool
    num_frames: int
    input_size: int
    sampling: str = "tsn"  # 'tsn' (segments) or 'dense'
    frame_interval: int = 1  # dense sampling only
    num_clip: int = 1  # test only
    num_crop: int = 1  # test only
    test_sampling: str = "uniform"  # 'uniform' or 'random' clip placement in testing
    crop_scales: tuple[float, ...] = (1.0, 0.875, 0.75, 0.66)
    flip_prob: float = 0.5
    jitter_prob: float = 0.8
    gray_prob: float = 0.2
    per_frame_jitter: bool = False

    @classmethod
    def from_config(cls, cfg, training: bool) -> "DrawSettings":
        data, aug, test = cfg.DATA, cfg.AUG, cfg.TEST
        return cls(training=training, num_frames=int(data.NUM_FRAMES), input_size=int(data.INPUT_SIZE),
                   sampling=data.SAMPLING, frame_interval=int(data.FRAME_INTERVAL),
                   num_clip=1 if training else int(test.NUM_CLIP), num_crop=1 if training else int(test.NUM_CROP),
                   test_sampling=test.SAMPLING, crop_scales=tuple(aug.CROP_SCALES), flip_prob=float(aug.FLIP),
                   jitter_prob=float(aug.COLOR_JITTER), gray_prob=float(aug.GRAY_SCALE),
                   per_frame_jitter=bool(aug.JITTER_PER_FRAME))

    @property
    def num_views(self) -> int:
        return self.num_clip * self.num_crop


@dataclass(frozen=True)
class VideoRef:
    """What the draw and the decoders need to know about one listed video."""

    row: int
    path: str
    label: int
    num_frames: int
    width: int
    height: int
    codec: str
    size: int = 0  # the file's size and mtime when it was probed: a file that differs now is not this video
    mtime_ns: int = 0
    colorspace: str = ""  # the YUV matrix tag (video_table.VideoInfo): DALI's decoders' frames are corrected to it


@dataclass
class Sample:
    """One scheduled sample: the video, its decode route, the frames to decode and the graph parameters.

    ``frames`` are the frame indices to decode: the clip in training; in testing the sorted union of every clip's
    indices (each frame is decoded once, however many views use it; ``params.new_order`` lays the views out).
    ``substitute_for``: the planned row this sample stands in for (a training video quarantined during the run).
    """

    video: VideoRef
    route: str
    frames: np.ndarray
    params: TrainParams | TestParams
    substitute_for: int | None = None

    @property
    def row(self) -> int:
        return self.video.row

    @property
    def label(self) -> int:
        return self.video.label


def _train_draw(s: DrawSettings, v: VideoRef, rng: np.random.Generator) -> tuple[np.ndarray, TrainParams]:
    if s.sampling == "dense":
        frames = sampling.dense_indices(v.num_frames, s.num_frames, s.frame_interval, rng)
    else:
        frames = sampling.segment_indices(v.num_frames, s.num_frames, rng)
    a = augment.draw_train_aug(rng, v.width, v.height, s.input_size, s.num_frames, scales=s.crop_scales,
                               flip_prob=s.flip_prob, jitter_prob=s.jitter_prob, gray_prob=s.gray_prob,
                               per_frame_jitter=s.per_frame_jitter)
    return frames, train_params(a)


def train_params(a: augment.TrainAug) -> TrainParams:
    """The graph's record of a drawn training augmentation."""
    return TrainParams(roi_start=a.roi_start, roi_end=a.roi_end, mirror=np.array(a.mirror, np.int32),
                       brightness=a.brightness, contrast=a.contrast, saturation=a.saturation, hue=a.hue,
                       color_ops=a.color_ops)


def _test_draw(s: DrawSettings, v: VideoRef, rng: np.random.Generator) -> tuple[np.ndarray, TestParams]:
    if s.sampling == "dense":
        clips = sampling.dense_multiview_indices(v.num_frames, s.num_frames, s.frame_interval, s.num_clip,
                                                 s.test_sampling, rng)
    else:
        clips = sampling.multiview_indices(v.num_frames, s.num_frames, s.num_clip, s.test_sampling, rng)
    union = np.unique(clips)  # each frame is decoded once, however many views use it
    pos = np.searchsorted(union, clips)  # (NUM_CLIP, T) positions in the union
    order = np.concatenate([c * len(union) + pos.reshape(-1) for c in range(s.num_crop)]).astype(np.int32)
    rois = augment.test_view_rois(v.width, v.height, s.input_size, s.num_crop)
    params = TestParams(roi_start=np.stack([r[0] for r in rois]).astype(np.float32),
                        roi_end=np.stack([r[1] for r in rois]).astype(np.float32), new_order=order)
    return union, params


def draw_sample(settings: DrawSettings, video: VideoRef, seed: int, epoch: int, route: str,
                substitute_for: int | None = None) -> Sample:
    """The sample of ``video`` in ``epoch``: a pure function of (settings, video, seed, epoch)."""
    rng = sampling.sample_rng(seed, epoch, video.row)
    draw = _train_draw if settings.training else _test_draw
    frames, params = draw(settings, video, rng)
    return Sample(video=video, route=route, frames=np.asarray(frames, np.int64), params=params,
                  substitute_for=substitute_for)
