"""Kinetics dataset preparation: file lists, label CSVs, the merged Kinetics-722 and short-GOP H.264 re-encoding.

This is the library behind ``tools/prepare_kinetics.py``. It replaces the original project's notebook, whose
"drop leaked K400 train" step printed a message but never filtered anything (SPEC.md section 6).

One module per job, each importable alone:

* ``scan``: class-folder trees ``<root>/{train,val}/<class name>/<video>`` -> ``DatasetScan`` of ``Video``s;
* ``video_files``: which entries of a split folder are videos, why one is left out, and the ``Video`` record;
* ``video_names``: which file names are videos, a name's YouTube id, whether it survives a list line, and its
  printable form for messages;
* ``check``: a scan's ``--check``, each video probed as the training index probes it, the probes saved when stopped;
* ``official``: the official k400/k600/k700 class lists, which such a dataset's classes must match;
* ``annotations``: the flat layout of the official downloads (``<root>/{train,val}/<youtube_id>_<start>_<end>.mp4``
  with ``<root>/annotations/{train,val}.csv``) -> the same ``Video`` records as a class-folder tree of the videos;
* ``lists``: labels (position in the sorted class names), list lines, label CSVs, and the per-dataset rule:
  train and val de-duplicated by YouTube id, train videos whose id is in the val list removed;
* ``k722``: the Kinetics-722 merge (class union, de-duplication, leak removal) and the class mappings;
* ``writers``: writing all of the above and the reports (``--dry-run`` describes instead of writing);
* ``encode``: re-encoding one video to short-GOP H.264 and verifying the output;
* ``reencode``: re-encoding a tree with it, resumable; ``reencode_report``: its report; ``reencode_settings``: the
  settings of the runs whose videos are in a ``--dst``, and the refusal to mix in others;
* ``source_record``: the size and mtime each output's source had when it was written, which tell a changed source;
* ``dst_ownership``: one re-encode at a time writing into a ``--dst``, which waits for the encodes of a run
  stopped before it and removes the partial outputs they left;
* ``common``: the error type and the process pool they share.

Outputs, in the original list format (``<path relative to DATA.ROOT> <label>``, one video per line):

* ``<name>_train.txt``, ``<name>_val.txt``, ``<name>_labels.csv`` (``id,name``) per dataset;
* ``k722_train.txt``, ``k722_val.txt``, ``k722_labels.csv`` and ``k722_to_<name>_mapping.npy`` (int64, one K722 id
  per class of ``<name>`` in that dataset's label order: ``head_722[mapping]`` is the dataset's head, what
  ``MODEL.CLASS_MAPPING`` reads);
* a JSON and a markdown report per output saying what was dropped and why.
"""

from .annotations import annotation_key, read_annotations
from .common import KineticsError, parallel_map
from .k722 import CLASS_ALIASES, K722Result, build_k722, canonical_class_name, class_mapping
from .lists import (class_labels, dataset_list_lines, format_list_line, labels_csv_text, read_labels_csv,
                    relative_path, write_labels_csv)
from .encode import (EncodeSettings, check_encode_settings, check_h264_encoder, count_frames, probe_output,
                     reencode_video)
from .reencode import plan_reencode, reencode_tree
from .scan import DatasetScan, Video, scan_dataset
from .video_names import VIDEO_EXTENSIONS, YOUTUBE_ID_LEN, is_listable, is_video_file, youtube_id
from .writers import prepare_k722, prepare_lists

__all__ = [
    "VIDEO_EXTENSIONS", "YOUTUBE_ID_LEN", "CLASS_ALIASES", "KineticsError", "Video", "DatasetScan", "K722Result",
    "EncodeSettings", "youtube_id", "is_video_file", "is_listable", "scan_dataset", "class_labels",
    "write_labels_csv", "labels_csv_text", "read_labels_csv", "format_list_line", "relative_path",
    "dataset_list_lines", "canonical_class_name", "build_k722", "class_mapping", "prepare_lists", "prepare_k722",
    "check_h264_encoder", "check_encode_settings", "count_frames", "probe_output", "reencode_video", "plan_reencode",
    "reencode_tree", "annotation_key", "read_annotations",
    "parallel_map",
]
