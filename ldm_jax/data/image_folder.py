"""A folder of your own images as a dataset: ``data.name=image_folder data.path=DIR``.

Conventions (one of each, checked in `tests/data/test_image_folder.py`):

* **Images**: every ``*.png|jpg|jpeg|webp|bmp|gif|tif|tiff`` file under DIR, recursively
  (extensions in any case; hidden files and folders skipped), in sorted path order.
* **Splits**: when DIR holds sub-folders named ``train``, ``test`` or ``validation``, each is a
  split (images outside them are ignored). Otherwise every image belongs to the one split
  ``"train"``; hold some out with tfds slicing (``"train[:90%]"`` / ``"train[90%:]"``).
* **Labels from folders**: when every image lies in a sub-folder of its split folder (``DIR/cat/
  x.png``, ``DIR/train/cat/x.png``), the first sub-folder is its class: label = index of the
  folder name among all class folder names, sorted. Images loose in the split folder: no labels.
* **Captions and labels from a file**: ``DIR/metadata.jsonl``, one JSON object per line,
  ``{"file_name": "dogs/1.jpg", "caption": "a dog on a sofa", "label": 3}`` (the Hugging Face
  ``imagefolder`` convention; ``"text"`` is read as ``"caption"``; a label may be an int or a class
  name, names numbered in sorted order). ``file_name`` is relative to DIR. When the file exists it
  lists the dataset: images it does not name are left out, and its labels replace folder labels.

Each example is {"image": uint8 [H, W, C] with min(H, W) == image_size (resized with Pillow
bicubic, not yet cropped: `pipeline` crops at the centre or at random), "file_name": str, and
"label": int / "caption": str when the folder has them}. Grey, palette, transparent, 16-bit,
32-bit, float and CMYK images are converted to ``channels`` (`image_files`). Files that cannot be
used (missing, unreadable, empty, not an image, truncated, corrupt, decompression-bomb sized) are
skipped, never stopping a run, and counted by reason: one warning per split names the counts and
a few files (`FolderSource.skip_reasons` holds them all, each with its reason). A split left
with no image at all, a folder that cannot be listed, a file given as the folder: one-line
`DataError`s naming the fix.

**Storage**: the folder is prepared once into a tfds array_record dataset under
``data_dir/image_folder/<folder>_<size>px_<channels>c_<fingerprint>``, the fingerprint covering
every file's path, size and modification time and metadata.jsonl, so an edited folder is prepared
again and an unchanged one is reused. Always on disk, never only in memory, so that there is one
path for 100 or 10 million images: bounded memory, grain workers and multi-host reads work as for
any tfds dataset, and a small folder costs well under a second to prepare.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from etils import epath

from ldm_jax.data import image_files, split_slices, tfds_quiet
from ldm_jax.data.decoded_source import DecodedSource
from ldm_jax.data.errors import DataError

SPLIT_FOLDERS = ("train", "test", "validation")
METADATA_FILE = "metadata.jsonl"
FILE_FORMAT = "array_record"
_FORMAT_VERSION = 2  # Bump when the prepared content changes for the same folder.
_EXAMPLES_LOGGED = 3  # Skipped files named in the summary warning.


@dataclasses.dataclass(frozen=True)
class FolderPlan:
    """What to prepare: files per split, their labels/captions, and the output geometry."""

    root: str
    image_size: int
    channels: int
    files: dict[str, tuple[str, ...]]  # split -> paths relative to root, sorted.
    labels: dict[str, int] | None  # relative path -> label.
    class_names: tuple[str, ...]  # Empty when labels are integers from metadata.jsonl.
    num_classes: int | None
    captions: dict[str, str] | None  # relative path -> caption.
    left_out: tuple[str, ...]  # Images not named by metadata.jsonl.
    key: str  # Folder name, geometry and fingerprint.


def _hint(path: str) -> str:
    return (
        f"put images ({', '.join(e[1:] for e in image_files.IMAGE_EXTENSIONS)}) in {path} or "
        "point data.path at such a folder (e.g. --config.data.path=/data/my_images)."
    )


def _unreadable_folder(error: OSError) -> None:
    """os.walk's onerror: a folder that cannot be listed would silently lose its images."""
    folder = error.filename or "?"
    reason = error.strerror or type(error).__name__
    raise DataError(
        f"Cannot list the image folder {folder} ({reason}): give yourself read and execute "
        f"permission (chmod -R u+rX {folder}) or move it out of data.path."
    ) from error


def _list_images(root: str) -> list[str]:
    """Relative paths of the image files under root (recursive, no hidden entries), sorted.

    Raises:
      DataError: root or one of its (non-hidden) sub-folders cannot be listed.
    """
    found = []
    for folder, dirs, files in os.walk(root, onerror=_unreadable_folder, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if not name.startswith(".") and name.lower().endswith(image_files.IMAGE_EXTENSIONS):
                found.append(os.path.relpath(os.path.join(folder, name), root))
    return sorted(p.replace(os.sep, "/") for p in found)


def _split_files(paths: list[str]) -> dict[str, list[str]]:
    """split -> relative paths (see the module doc's split convention)."""
    firsts = {p.split("/", 1)[0] for p in paths if "/" in p}
    splits = [s for s in SPLIT_FOLDERS if s in firsts]
    if not splits:
        return {"train": paths}
    return {s: [p for p in paths if p.startswith(s + "/")] for s in splits}


def _read_metadata(root: str) -> dict[str, dict[str, Any]] | None:
    path = os.path.join(root, METADATA_FILE)
    if not os.path.exists(path):
        return None
    entries = {}
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.readlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(
            f"Cannot read {path} ({e.strerror if isinstance(e, OSError) else e}): make it a "
            "readable UTF-8 text file (one JSON object per line) or remove it."
        ) from e
    for line_no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            name = os.path.normpath(entry["file_name"]).replace(os.sep, "/")
        except (ValueError, KeyError, TypeError) as e:
            raise DataError(
                f"{path}:{line_no}: each line must be a JSON object with a 'file_name' "
                f'(e.g. {{"file_name": "a.png", "caption": "a cat"}}); '
                f"got {line.strip()[:80]!r}."
            ) from e
        entries[name] = entry
    return entries


def _labels_from_folders(files: dict[str, list[str]], split_layout: bool):
    """(labels, class_names) from class sub-folders, or (None, ()) if some image is loose."""
    class_of = {}
    for paths in files.values():
        for p in paths:
            parts = p.split("/")[1:] if split_layout else p.split("/")
            if len(parts) < 2:
                return None, ()
            class_of[p] = parts[0]
    names = tuple(sorted(set(class_of.values())))
    index = {n: i for i, n in enumerate(names)}
    return {p: index[c] for p, c in class_of.items()}, names


def _labels_from_metadata(meta: dict[str, dict[str, Any]], kept: list[str]):
    raw = {p: meta[p]["label"] for p in kept if "label" in meta[p]}
    if not raw:
        return None, (), None
    if len(raw) != len(kept):
        raise DataError(
            f"{METADATA_FILE}: {len(kept) - len(raw)} of {len(kept)} images have no 'label'; "
            "give every line a label or none."
        )
    if all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in raw.values()):
        return raw, (), max(raw.values()) + 1
    names = tuple(sorted({str(v) for v in raw.values()}))
    index = {n: i for i, n in enumerate(names)}
    return {p: index[str(v)] for p, v in raw.items()}, names, len(names)


def _fingerprint(root: str, paths: list[str], image_size: int, channels: int) -> str:
    digest = hashlib.sha256()
    head = [_FORMAT_VERSION, os.path.realpath(root), image_size, channels]
    digest.update(json.dumps(head).encode())
    for rel in [*paths, METADATA_FILE]:
        try:
            st = os.stat(os.path.join(root, rel))
        except OSError:  # Absent (or vanished since listing): read as skipped.
            continue
        digest.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def plan_folder(path: str, image_size: int, channels: int = 3) -> FolderPlan:
    """Scans a folder and decides splits, labels and captions (no image is decoded).

    Raises:
      FileNotFoundError: the folder does not exist.
      DataError: no data.path, a file as the path, a folder that cannot be listed or holds no
        image files, an unreadable or malformed metadata.jsonl; the message names the fix.
      ValueError: a bad image_size or channels (checked with the config before).
    """
    if not path:
        raise DataError("data.name=image_folder needs data.path: " + _hint("a folder"))
    root = os.path.abspath(os.path.expanduser(path))
    if os.path.exists(root) and not os.path.isdir(root):
        raise DataError(
            f"data.path {root} is a file, not a folder: point data.path at the folder that "
            f"holds the images (e.g. --config.data.path={os.path.dirname(root)})."
        )
    if not os.path.isdir(root):
        raise FileNotFoundError(f"Image folder {root} does not exist: " + _hint(root))
    if isinstance(image_size, bool) or not isinstance(image_size, int | np.integer):
        raise ValueError(f"image_folder needs an integer image_size, got {image_size!r}.")
    if image_size <= 0:
        raise ValueError(f"image_folder needs a positive image_size, got {image_size!r}.")
    image_size, channels = int(image_size), image_files.check_channels(channels)
    paths = _list_images(root)
    if not paths:
        raise DataError(f"Image folder {root} holds no image files: " + _hint(root))
    meta = _read_metadata(root)
    left_out: list[str] = []
    if meta is not None:
        left_out = [p for p in paths if p not in meta]
        paths = [p for p in paths if p in meta]
        if not paths:
            raise DataError(
                f"{os.path.join(root, METADATA_FILE)} names none of the images: give each line "
                'the file_name of an image relative to the folder (e.g. "dogs/1.jpg").'
            )
    files = _split_files(paths)
    split_layout = list(files) != ["train"] or any(p.startswith("train/") for p in paths)
    labels, names, num_classes = None, (), None
    if meta is not None:
        labels, names, num_classes = _labels_from_metadata(meta, paths)
    if labels is None:
        labels, names = _labels_from_folders(files, split_layout)
        num_classes = len(names) if labels is not None else None
    captions = None
    if meta is not None and any("caption" in meta[p] or "text" in meta[p] for p in paths):
        captions = {p: str(meta[p].get("caption", meta[p].get("text", ""))) for p in paths}
    base = re.sub(r"[^A-Za-z0-9_.-]+", "_", os.path.basename(root.rstrip("/")) or "root")
    key = f"{base}_{image_size}px_{channels}c_{_fingerprint(root, paths, image_size, channels)}"
    return FolderPlan(
        root=root,
        image_size=image_size,
        channels=channels,
        files={s: tuple(v) for s, v in files.items()},
        labels=labels,
        class_names=names,
        num_classes=num_classes,
        captions=captions,
        left_out=tuple(left_out),
        key=key,
    )


class LdmImageFolder(tfds.core.GeneratorBasedBuilder):
    """tfds builder for one `FolderPlan` (its data_dir is keyed by the plan's fingerprint)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Images resized (shorter side), uint8 tensors, optional labels."}
    code_path = epath.Path(__file__)

    def __init__(self, *, plan: FolderPlan, **kwargs: Any):
        self._plan = plan
        self.skipped: dict[str, str] = {}  # Relative path -> reason, filled while preparing.
        super().__init__(**kwargs)

    def _log_download_bytes(self) -> None:  # tfds prints to stdout; `prepare` logs instead.
        pass

    def _log_download_done(self) -> None:
        pass

    def _info(self) -> tfds.core.DatasetInfo:
        plan = self._plan
        features: dict[str, Any] = {
            "image": tfds.features.Tensor(
                shape=(None, None, plan.channels),
                dtype=np.uint8,
                encoding=tfds.features.Encoding.ZLIB,
            ),
            "file_name": tfds.features.Text(),
        }
        if plan.labels is not None:
            features["label"] = (
                tfds.features.ClassLabel(names=list(plan.class_names))
                if plan.class_names
                else tfds.features.ClassLabel(num_classes=plan.num_classes)
            )
        if plan.captions is not None:
            features["caption"] = tfds.features.Text()
        return tfds.core.DatasetInfo(
            builder=self,
            description=f"Images of {plan.root}, shorter side {plan.image_size}.",
            features=tfds.features.FeaturesDict(features),
            disable_shuffling=True,  # Record i is the i-th file in sorted order.
            metadata=tfds.core.MetadataDict(),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
        del dl_manager
        return {s: self._generate_examples(s) for s in self._plan.files}

    def _generate_examples(self, split: str) -> Iterator[tuple[int, dict[str, Any]]]:
        plan = self._plan
        for i, rel in enumerate(plan.files[split]):
            try:
                image = image_files.read_image(
                    os.path.join(plan.root, rel), plan.channels, plan.image_size
                )
            except image_files.ImageDecodeError as e:
                logging.debug("Skipping image %s: %s (%s)", rel, e.reason, e.detail)
                self.skipped[rel] = e.reason
                continue
            example = {"image": image, "file_name": rel}
            if plan.labels is not None:
                example["label"] = plan.labels[rel]
            if plan.captions is not None:
                example["caption"] = plan.captions[rel]
            yield i, example
        in_split = set(plan.files[split])
        reasons = {r: why for r, why in self.skipped.items() if r in in_split}
        self.info.metadata[f"skipped_{split}"] = list(reasons)
        self.info.metadata[f"skip_reasons_{split}"] = reasons


def skip_summary(root: str, split: str, skipped: dict[str, str], total: int) -> str:
    """One line: how many files of a split were skipped, by reason, with a few examples.

    Args:
      root: the image folder.
      split: the split name.
      skipped: relative path -> reason (`image_files.SKIP_REASONS`), in file order.
      total: image files of the split.
    """
    return (
        f"Skipped {len(skipped)} of {total} image files of split {split!r} in {root}: "
        f"{_reasons(skipped)}; fix or remove them (they are left out of the dataset)."
    )


def _reasons(skipped: dict[str, str]) -> str:
    """'2 corrupt, 1 empty file (e.g. a.png (corrupt), ...)': counts by reason, then examples."""
    counts = collections.Counter(skipped.values())
    by_reason = ", ".join(f"{n} {why}" for why, n in sorted(counts.items(), key=_most_first))
    examples = ", ".join(f"{rel} ({why})" for rel, why in list(skipped.items())[:_EXAMPLES_LOGGED])
    more = ", ..." if len(skipped) > _EXAMPLES_LOGGED else ""
    return f"{by_reason} (e.g. {examples}{more})"


def _most_first(item: tuple[str, int]) -> tuple[int, str]:
    return -item[1], item[0]


def prepare(plan: FolderPlan, data_dir: str) -> LdmImageFolder:
    """Prepares the plan into `data_dir/image_folder/<key>` unless already there; the builder.

    Raises:
      DataError: every image file of a split was skipped (the message counts the reasons).
    """
    with tfds_quiet.quiet():
        builder = _prepare(plan, os.path.join(data_dir, "image_folder", plan.key))
    if plan.left_out:
        logging.info("%d image(s) not named in %s left out.", len(plan.left_out), METADATA_FILE)
    return builder


def _prepare(plan: FolderPlan, folder_dir: str) -> LdmImageFolder:
    b = LdmImageFolder(plan=plan, data_dir=folder_dir, file_format=FILE_FORMAT)
    if b.is_prepared():
        return b
    total = sum(len(v) for v in plan.files.values())
    logging.info("Preparing %d images of %s into %s", total, plan.root, folder_dir)
    try:
        b.download_and_prepare(
            file_format=FILE_FORMAT,
            download_config=tfds.download.DownloadConfig(try_download_gcs=False),
        )
    except Exception as e:
        other = LdmImageFolder(plan=plan, data_dir=folder_dir, file_format=FILE_FORMAT)
        if other.is_prepared():  # Another process prepared the same folder meanwhile.
            return other
        for split, files in plan.files.items():
            if set(files) <= set(b.skipped):
                reasons = _reasons({f: b.skipped[f] for f in files})
                raise DataError(
                    f"None of the {len(files)} image files of split {split!r} in {plan.root} "
                    f"could be read: {reasons}; replace or remove the broken files, or point "
                    "data.path at another folder."
                ) from e
        raise
    return b


class FolderSource(DecodedSource):
    """Random-access examples of a prepared folder; captions/file names as str, labels as int."""

    text_keys = ("file_name", "caption")
    int_keys = ("label",)

    def __init__(self, source: Any, plan: FolderPlan, skip_reasons: dict[str, str]):
        super().__init__(source)
        self.plan = plan
        self.skip_reasons = dict(skip_reasons)  # Skipped files (relative path -> reason).
        self.skipped = tuple(skip_reasons)  # Their relative paths, in file order.


def get_source(
    path: str, split: str, data_dir: str, *, image_size: int, channels: int = 3
) -> FolderSource:
    """Prepares (once) and returns the examples of an image folder split (see module doc).

    Args:
      path: the image folder.
      split: "train" (or "test"/"validation" with split sub-folders), tfds slicing allowed.
      data_dir: where the prepared copy is stored.
      image_size: the shorter side of the stored images.
      channels: 1 or 3.

    Raises:
      FileNotFoundError: the folder does not exist.
      DataError: unknown split, a folder that cannot be listed, a file as the folder, or a
        split none of whose files could be read (one line naming the fix).
      ValueError: no image files, or bad arguments.
    """
    plan = plan_folder(path, image_size, channels)
    builder = prepare(plan, data_dir)
    parts = [p.split("[")[0].strip() for p in split.split("+")] if isinstance(split, str) else []
    bad = [p for p in parts if p not in plan.files]
    if not parts or bad:
        raise DataError(
            f"Invalid split {split!r} for image folder {plan.root}: it has {sorted(plan.files)} "
            f"(sub-folders {'/'.join(SPLIT_FOLDERS)} make splits; slice with e.g. 'train[90%:]')."
        )
    skipped: dict[str, str] = {}
    for part in dict.fromkeys(parts):
        reasons = dict(builder.info.metadata.get(f"skip_reasons_{part}", {}))
        if reasons:
            total = len(plan.files[part])
            logging.warning("%s", skip_summary(plan.root, part, reasons, total))
        skipped.update(reasons)
    return FolderSource(
        split_slices.data_source(builder, split.replace(" ", ""), plan.root), plan, skipped
    )
