"""The prepared format: a data set decoded once into uint8 ``.npy`` files that every trial maps.

A search trains hundreds of candidates on the same images. Decoding JPEGs per trial, or
loading a whole array per trial, would dominate it and multiply memory by the number of
trials on a host; so, as FFCV does, the data set is decoded once (``nas data prepare``,
:mod:`nas.data.writer`) into plain arrays, and every trial memory-maps them read-only:
the kernel keeps one page-cache copy for all of them. A prepared folder holds::

    manifest.json                  what is inside; written last, so its presence means complete
    train_x.npy    train_y.npy     uint8 (N, 3, R, R) RGB images, int64 labels
    minival_x.npy  minival_y.npy   held out from the training images with a fixed seed
    test_x.npy     test_y.npy      the source's own test (val) split, when it has one

Until it is complete, a prepare writes into ``OUT.partial/`` (with ``progress.json``).
Reading checks every file against the manifest (shape, dtype, size) before mapping it;
the checksums are for :func:`verify_prepared`, which reads everything.
"""
from __future__ import annotations

import hashlib
import json
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from nas.data.dataset import DataError, Dataset, Split
from nas.data.sources import npy_header

__all__ = [
    "FORMAT",
    "MANIFEST",
    "PROGRESS",
    "SPLITS",
    "VERSION",
    "Manifest",
    "file_sha256",
    "open_prepared",
    "partial_dir",
    "read_manifest",
    "verify_prepared",
]

MANIFEST = "manifest.json"
PROGRESS = "progress.json"   # in OUT.partial/ while a prepare is under way
FORMAT, VERSION = "nas-prepared", 1
SPLITS = ("train", "minival", "test")
_HASH_BLOCK = 1 << 23


# --------------------------------------------------------------------------- manifest


@dataclass(frozen=True)
class Manifest:
    """What a prepared folder holds (``manifest.json``).

    Attributes:
        resolution: Side of the square images stored.
        classes: Class names by label.
        hflip: Whether a horizontal flip preserves the label.
        mean: Per-channel mean of the training images, [0, 1] units.
        std: Per-channel standard deviation of the training images, [0, 1] units.
        images: Images per split (``train``, ``minival``, and ``test`` when present).
        minival_seed: Seed of the permutation that chose the minival images.
        files: Per file name: ``shape``, ``dtype`` and ``sha256``.
        source: The source prepared (absolute path).
        source_format: One of ``nas.data.writer.SOURCE_FORMATS`` (never ``auto``).
        skipped: Unreadable source images left out (paths relative to the source).
        options: The options ``prepare`` was given (classes, images per class, val size).
        plan: Digest of the source listing and options: the same plan gives the same bytes.
    """

    resolution: int
    classes: tuple[str, ...]
    hflip: bool
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    images: Mapping[str, int]
    minival_seed: int
    files: Mapping[str, Mapping[str, Any]]
    source: str
    source_format: str
    skipped: tuple[str, ...] = ()
    options: Mapping[str, Any] = field(default_factory=dict)
    plan: str = ""

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    def to_json(self) -> str:
        """The manifest as JSON text."""
        data = {
            "format": FORMAT,
            "version": VERSION,
            "source": self.source,
            "source_format": self.source_format,
            "resolution": self.resolution,
            "num_classes": self.num_classes,
            "classes": list(self.classes),
            "hflip": self.hflip,
            "mean": list(self.mean),
            "std": list(self.std),
            "images": dict(self.images),
            "minival": {"seed": self.minival_seed, "size": self.images["minival"]},
            "skipped": list(self.skipped),
            "options": dict(self.options),
            "plan": self.plan,
            "files": {name: dict(entry) for name, entry in self.files.items()},
        }
        return json.dumps(data, indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str, where: Path) -> Manifest:
        """Parse and check a manifest; every fault is a one-line :class:`DataError` naming ``where``."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"prepared: {where} is not valid JSON (line {exc.lineno}: {exc.msg})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise DataError(f"prepared: {where} is not a manifest written by nas data prepare")
        if data.get("version") != VERSION:
            raise DataError(f"prepared: {where} has version {data.get('version')!r}; this nas reads {VERSION}")

        def need(key: str, kind: type | tuple[type, ...], ok: Callable[[Any], bool] = lambda v: True) -> Any:
            value = data.get(key)
            if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool or not ok(value):
                raise DataError(f"prepared: {where}: field {key!r} is missing or wrong ({value!r})")
            return value

        def triple(key: str) -> tuple[float, float, float]:
            value = need(key, list, lambda v: len(v) == 3 and all(isinstance(x, (int, float)) for x in v))
            return float(value[0]), float(value[1]), float(value[2])

        classes = tuple(str(c) for c in need("classes", list, lambda v: len(v) >= 2))
        if data.get("num_classes") != len(classes):
            raise DataError(f"prepared: {where}: num_classes {data.get('num_classes')!r} but {len(classes)} class names")
        images = need("images", dict, lambda v: {"train", "minival"} <= set(v) <= set(SPLITS))
        files = need("files", dict)
        for split, count in images.items():
            if not isinstance(count, int) or count < 1:
                raise DataError(f"prepared: {where}: images[{split!r}] is {count!r} (expected a positive count)")
            for name, shape in ((f"{split}_x.npy", None), (f"{split}_y.npy", [count])):
                entry = files.get(name)
                if not isinstance(entry, dict) or not isinstance(entry.get("shape"), list):
                    raise DataError(f"prepared: {where}: no entry for {name} in 'files'")
                if entry["shape"][:1] != [count] or shape is not None and entry["shape"] != shape:
                    raise DataError(f"prepared: {where}: {name} has shape {entry['shape']} but images[{split!r}] "
                                    f"is {count}")
        minival = need("minival", dict)
        return cls(
            resolution=need("resolution", int, lambda v: v >= 1),
            classes=classes,
            hflip=need("hflip", bool),
            mean=triple("mean"),
            std=triple("std"),
            images=dict(images),
            minival_seed=int(minival.get("seed", 0)),
            files=files,
            source=str(data.get("source", "")),
            source_format=str(data.get("source_format", "")),
            skipped=tuple(data.get("skipped", ())),
            options=dict(data.get("options", {})),
            plan=str(data.get("plan", "")),
        )


def read_manifest(folder: str | Path) -> Manifest:
    """Read ``folder/manifest.json``.

    Raises:
        DataError: No such folder, no manifest (never prepared, or interrupted), or a
            manifest that is not valid.
    """
    folder = Path(folder).expanduser()
    if not folder.exists():
        raise DataError(f"prepared: no folder {folder} (prepare one with: nas data prepare SRC {folder} --resolution R)")
    if not folder.is_dir():
        raise DataError(f"prepared: {folder} is a file (expected the folder nas data prepare wrote)")
    path = folder / MANIFEST
    if not path.is_file():
        partial = partial_dir(folder)
        hint = (f"the prepare into it was interrupted: rerun nas data prepare to resume ({partial})"
                if (partial / PROGRESS).is_file() else "not a folder written by nas data prepare")
        raise DataError(f"prepared: no {MANIFEST} in {folder} ({hint})")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise DataError(f"prepared: {path} is not a text file (binary or not UTF-8)") from None
    except OSError as exc:
        raise DataError(f"prepared: cannot read {path}: {exc.strerror or exc}") from None
    return Manifest.from_json(text, path)


# --------------------------------------------------------------------------- reading


def open_prepared(folder: str | Path, *, split: str = "search") -> Dataset:
    """Map a prepared folder read-only as a :class:`Dataset`; nothing is copied or read whole.

    Args:
        folder: The folder ``nas data prepare`` wrote.
        split: ``"search"`` (train, validated on minival) or ``"final"`` (train + minival
            as two parts, validated on the test split; without a test split, as search).

    Raises:
        DataError: A missing, truncated or foreign file, or one the manifest disagrees with.
    """
    folder = Path(folder).expanduser()
    manifest = read_manifest(folder)
    parts = {name: _map_split(folder, manifest, name) for name in manifest.images}
    val_is_test = split == "final" and "test" in parts
    if val_is_test:
        train, val = Split((parts["train"], parts["minival"])), Split.of(*parts["test"])
    else:
        train, val = Split.of(*parts["train"]), Split.of(*parts["minival"])
    return Dataset(
        name="prepared",
        train=train,
        val=val,
        num_classes=manifest.num_classes,
        hflip=manifest.hflip,
        mean=manifest.mean,
        std=manifest.std,
        classes=manifest.classes,
        val_is_test=val_is_test,
    )


def _map_split(folder: Path, manifest: Manifest, split: str) -> tuple[np.ndarray, np.ndarray]:
    x = _map(folder / f"{split}_x.npy", manifest)
    y = _map(folder / f"{split}_y.npy", manifest)
    # labels are 8 bytes an image against thousands for the image: reading them to check
    # costs nothing, and a bad one would otherwise surface as a device-side assert
    low, high = (int(y.min()), int(y.max())) if len(y) else (0, 0)
    if low < 0 or high >= manifest.num_classes:
        raise DataError(f"prepared: {folder / f'{split}_y.npy'} has label {low if low < 0 else high}, "
                        f"but {MANIFEST} lists {manifest.num_classes} classes")
    return x, y


def _map(path: Path, manifest: Manifest) -> np.ndarray:
    """Memory-map one array read-only after checking it against the manifest and its own size."""
    entry = manifest.files.get(path.name, {})
    if path.is_dir():
        raise DataError(f"prepared: {path} is a folder (expected an .npy array)")
    if not path.is_file():
        raise DataError(f"prepared: missing {path} (listed in {path.parent / MANIFEST})")
    try:
        with path.open("rb") as f:
            shape, fortran, dtype = npy_header(f)
            offset = f.tell()
    except (ValueError, OSError, SyntaxError, EOFError) as exc:
        raise DataError(f"prepared: {path} is not a readable .npy array ({' '.join(str(exc).split())})") from None
    expected = (list(entry.get("shape", [])), str(entry.get("dtype")))
    if (list(shape), str(dtype)) != expected or fortran:
        raise DataError(f"prepared: {path} holds {list(shape)} {dtype}, but {MANIFEST} says {expected[0]} {expected[1]}")
    size, want = path.stat().st_size, offset + math.prod(shape) * dtype.itemsize
    if size != want:
        what = "is truncated" if size < want else "is longer than its header says"
        raise DataError(f"prepared: {path} {what} ({size:,} bytes, expected {want:,}); prepare it again")
    return np.load(path, mmap_mode="r")


def verify_prepared(folder: str | Path, *, workers: int = 4) -> tuple[str, ...]:
    """Check every file of a prepared folder against its manifest, checksums included.

    Returns:
        One line per problem; empty when the folder is intact.

    Raises:
        DataError: The manifest itself cannot be read.
    """
    folder = Path(folder).expanduser()
    manifest = read_manifest(folder)
    problems = []
    for split in manifest.images:
        try:
            _map_split(folder, manifest, split)
        except DataError as exc:
            problems.append(str(exc))
    names = [n for n in manifest.files if (folder / n).is_file()]
    with ThreadPoolExecutor(max(1, workers)) as pool:
        digests = dict(zip(names, pool.map(lambda n: file_sha256(folder / n), names)))
    for name, digest in digests.items():
        if digest != manifest.files[name].get("sha256"):
            problems.append(f"prepared: {folder / name} does not match its checksum in {MANIFEST}")
    return tuple(dict.fromkeys(problems))


def file_sha256(path: Path) -> str:
    """The sha256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def partial_dir(out: Path) -> Path:
    """Where a prepare into ``out`` writes until it is complete: ``OUT.partial`` beside it."""
    return out.with_name(out.name + ".partial")
