"""Writing a prepared folder (``nas data prepare``): decode once, resumably, in parallel.

The source (an image folder, CIFAR, MNIST, an ``.npz``) is listed and a plan fixed
before anything is decoded: which images, in which order, which of them form the
minival (the first readable ones of a seeded permutation of the training images). Rows
are then appended to ``.npy`` files in ``OUT.partial/`` split by split (minival, train,
test), image folders decoded by worker processes; ``progress.json`` records how far each
split got and is made durable every few seconds and on any interruption, so a rerun
resumes where it stopped and writes the same bytes as a run that was not interrupted.
Unreadable images are skipped and listed. At the end the row counts are fixed, the
files checksummed, the manifest written, and the folder renamed to ``OUT`` (see
:mod:`nas.data.prepared` for the format).
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator, Sequence

import numpy as np

from nas.data.dataset import ChannelSums, DataError
from nas.data.prepared import (
    FORMAT,
    MANIFEST,
    PROGRESS,
    SPLITS,
    VERSION,
    Manifest,
    file_sha256,
    partial_dir,
    read_manifest,
)
from nas.data.sources import (
    LOADERS,
    ImageFolder,
    SourceArgs,
    decode_image,
    npy_header,
    npz_images,
    open_npz,
    resize_crop,
    scan_imagefolder,
)

__all__ = ["SOURCE_FORMATS", "PrepareResult", "default_val_size", "prepare", "read_class_list"]

SOURCE_FORMATS = ("auto", "imagefolder", "npz", "cifar10", "cifar100", "mnist", "fashion_mnist")
# The EfficientNetV2 search held out 25,000 of ImageNet's training images; 10 % of a
# smaller set, up to that many, gives a minival large enough to rank candidates.
_VAL_SHARE, _VAL_CAP = 0.1, 25_000
_FOLDER_CHUNK = 64     # images per decode task: small enough for a smooth progress bar
_ARRAY_CHUNK = 512     # rows per copy from an array source
_SAVE_EVERY_S = 5.0    # progress is made durable this often (and on any interruption)
_POOL_MIN_TASKS = 4    # decode tasks per worker below which a stage is decoded in this process


@dataclass(frozen=True)
class PrepareResult:
    """What ``prepare`` did.

    Attributes:
        path: The prepared folder.
        manifest: Its manifest.
        decoded: Source images this call went through, unreadable ones included (0 when
            the folder was already complete).
        resumed_from: Source images an interrupted prepare had already done.
        seconds: Wall time of this call.
    """

    path: Path
    manifest: Manifest
    decoded: int
    resumed_from: int
    seconds: float


def default_val_size(train_images: int) -> int:
    """The minival size when none is given: 10 % of the training images, at most 25,000."""
    return min(_VAL_CAP, max(1, round(_VAL_SHARE * train_images)))


def read_class_list(path: str | Path) -> tuple[str, ...]:
    """Class names from a text file, one a line (blank lines and ``#`` comments ignored).

    Raises:
        DataError: A folder, a missing file, or a file that is not UTF-8 text.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        raise DataError(f"classes: {path} is a folder (expected a text file with one class name a line)")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise DataError(f"classes: {path} is not a text file (binary or not UTF-8)") from None
    except OSError as exc:
        raise DataError(f"classes: cannot read {path}: {exc.strerror or exc}") from None
    names = tuple(line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#"))
    if not names:
        raise DataError(f"classes: {path} lists no class names")
    return names


def prepare(
    src: str | Path,
    out: str | Path,
    *,
    resolution: int,
    classes: int | Sequence[str] | None = None,
    images_per_class: int | None = None,
    val_size: int | None = None,
    seed: int = 0,
    workers: int | None = None,
    source_format: str = "auto",
    progress: Callable[[str, int, int], None] | None = None,
) -> PrepareResult:
    """Decode a source once into a prepared folder (see the module docstring).

    Rerunning the same call after an interruption resumes it; rerunning it on a complete
    folder returns at once.

    Args:
        src: An image folder (``train/<class>/*`` + optional ``val/<class>/*``, or
            ``<class>/*``), a CIFAR-10/100 or (Fashion-)MNIST folder, or an ``.npz`` with
            arrays ``x``, ``y`` (+ ``x_test``, ``y_test``).
        out: The folder to write; it must not exist yet (or be empty).
        resolution: Side of the square images stored: shorter side resized, centre crop.
        classes: Keep the first K classes (by label; sorted folder names for an image
            folder), or the classes named.
        images_per_class: Keep the first M training images of each class.
        val_size: Training images held out as minival (default :func:`default_val_size`).
        seed: Seed of the permutation that chooses the minival images.
        workers: Decoding processes for an image folder (default: the usable cores).
        source_format: One of ``SOURCE_FORMATS``; ``auto`` tells them apart by their files.
        progress: Called as ``progress(stage, done, total)`` while images are written.

    Returns:
        What was done, with the manifest.

    Raises:
        DataError: A bad argument or source, or an ``out`` that holds something else.
    """
    start = time.perf_counter()
    _check_int("resolution", resolution, 1)
    for name, value, low in (("images_per_class", images_per_class, 1), ("val_size", val_size, 1),
                             ("workers", workers, 1)):
        if value is not None:
            _check_int(name, value, low)
    if source_format not in SOURCE_FORMATS:
        raise DataError(f"prepare: format {source_format!r} not in {', '.join(SOURCE_FORMATS)}")
    src_path, out_path = Path(src).expanduser().resolve(), Path(out).expanduser().absolute()
    if out_path.suffix == ".npz":
        raise DataError(f"prepare: {out_path} ends in .npz, but a prepared set is a folder (manifest.json + .npy "
                        "arrays); name a folder and train with --dataset prepared --data-dir FOLDER")
    kind = _detect(src_path) if source_format == "auto" else source_format
    _check_out(out_path)
    with _open_source(kind, src_path, resolution, workers or _usable_cores()) as source:
        plan = _plan(source, resolution, classes, images_per_class, val_size, seed)
        done = _existing(out_path, plan.digest)
        if done is not None:
            return PrepareResult(out_path, done, 0, 0, time.perf_counter() - start)
        writer = _Writer(partial_dir(out_path), plan, source, progress)
        decoded = writer.run()
        manifest = writer.finish(out_path)
    return PrepareResult(out_path, manifest, decoded, writer.resumed_from, time.perf_counter() - start)


def _check_int(name: str, value: object, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise DataError(f"prepare: {name} must be a whole number >= {low}, got {value!r}")


def _usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise DataError(f"prepare: {out} is a file (expected a new folder)")
    if out.is_dir() and not (out / MANIFEST).is_file() and any(out.iterdir()):
        raise DataError(f"prepare: {out} already exists and is not a prepared folder; choose a new folder")


def _existing(out: Path, digest: str) -> Manifest | None:
    """The manifest of a complete ``out`` prepared by the same plan; ``None`` when there is none."""
    if not (out / MANIFEST).is_file():
        return None
    manifest = read_manifest(out)
    if manifest.plan != digest:
        raise DataError(f"prepare: {out} already holds a prepared set ({manifest.source}, "
                        f"{manifest.resolution} px, other options or files); choose a new folder")
    return manifest


def _detect(src: Path) -> str:
    """The format of a source, from its files."""
    if src.is_file():
        if src.suffix == ".npz":
            return "npz"
        raise DataError(f"prepare: {src} is a file but not an .npz (expected an image folder or an .npz)")
    if not src.is_dir():
        raise DataError(f"prepare: no such folder or file {src}")
    if (src / "cifar-10-batches-py" / "data_batch_1").is_file() or (src / "data_batch_1").is_file():
        return "cifar10"
    if (src / "cifar-100-python" / "train").is_file() or (src / "train").is_file() and (src / "meta").is_file():
        return "cifar100"
    stems = ("train-images-idx3-ubyte", "train-images-idx3-ubyte.gz")
    for sub in ("", "mnist", "MNIST/raw", "fashion_mnist", "FashionMNIST/raw"):
        if any((src / sub / stem).is_file() for stem in stems):
            return "fashion_mnist" if "fashion" in str(src / sub).lower() else "mnist"
    return "imagefolder"


# --------------------------------------------------------------------------- sources


class _FolderSource:
    """An image folder: JPEGs decoded in worker processes, unreadable ones reported."""

    chunk = _FOLDER_CHUNK

    def __init__(self, folder: ImageFolder, resolution: int, workers: int) -> None:
        self.kind, self.root, self.resolution, self.where = "imagefolder", folder.root, resolution, str(folder.root)
        self.classes, self.hflip = folder.classes, True
        self.paths = {"train": [p for p, _ in folder.train]}
        self.labels = {"train": np.asarray([label for _, label in folder.train], dtype=np.int64)}
        if folder.test is not None:
            self.paths["test"] = [p for p, _ in folder.test]
            self.labels["test"] = np.asarray([label for _, label in folder.test], dtype=np.int64)
        self.workers = workers
        self._pool: Any = None

    def fingerprint(self) -> bytes:
        return "\n".join(self.paths["train"] + self.paths.get("test", [])).encode()

    def name(self, split: str, item: int) -> str:
        return self.paths[split][item]

    def decode(self, split: str, chunks: Sequence[np.ndarray]) -> Iterator[tuple[np.ndarray, list[int]]]:
        tasks = [(self.root, [self.paths[split][i] for i in chunk], self.resolution) for chunk in chunks]
        if self.workers == 1 or self._pool is None and len(tasks) < _POOL_MIN_TASKS * self.workers:
            # too little work to repay starting the workers (a second or two)
            yield from map(_decode_task, tasks)
            return
        if self._pool is None:
            import multiprocessing

            # forkserver, not fork: this process may hold threads (torch's), and forking a
            # threaded process can deadlock; the server imports this module once (numpy
            # and Pillow, no torch) and forks the workers from that clean state. Workers
            # ignore Ctrl-C, so the parent alone stops them, saves its progress and says so.
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload([__name__])
            self._pool = context.Pool(self.workers, initializer=_ignore_sigint)
        yield from self._pool.imap(_decode_task, tasks)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _decode_task(task: tuple[Path, list[str], int]) -> tuple[np.ndarray, list[int]]:
    """Decode a chunk of images (in a worker): the good ones stacked, positions of the bad ones."""
    root, paths, resolution = task
    images, bad = [], []
    for position, path in enumerate(paths):
        try:
            images.append(decode_image(root / path, resolution))
        except DataError:
            bad.append(position)
    stacked = np.stack(images) if images else np.empty((0, 3, resolution, resolution), dtype=np.uint8)
    return stacked, bad


class _ArraySource:
    """Arrays (an ``.npz``, memory-mapped where stored uncompressed, or CIFAR/MNIST in memory)."""

    chunk = _ARRAY_CHUNK

    def __init__(self, kind: str, path: Path, resolution: int) -> None:
        self.kind, self.path, self.resolution, self.where = kind, path, resolution, str(path)
        if kind == "npz":
            npz = open_npz("npz", path, mmap=True)
            arrays = {"train": (npz.x, npz.y), "test": (npz.x_test, npz.y_test)}
            self.classes = npz.classes or tuple(str(c) for c in range(npz.num_classes))
            self.hflip = npz.hflip
            self._convert = lambda x, split: npz_images("npz", path, x, "x" if split == "train" else "x_test")
        else:
            raw = LOADERS[kind](SourceArgs(name=kind, data_dir=path))
            arrays = {"train": (raw.x, raw.y), "test": (raw.x_test, raw.y_test)}
            self.classes = raw.classes or tuple(str(c) for c in range(raw.num_classes))
            self.hflip = raw.hflip
            self._convert = lambda x, split: x
        self.images = {split: x for split, (x, y) in arrays.items() if x is not None}
        self.labels = {split: y for split, (x, y) in arrays.items() if x is not None}

    def fingerprint(self) -> bytes:
        stat = self.path.stat()
        shapes = {split: x.shape for split, x in self.images.items()}
        return repr((self.kind, stat.st_size, stat.st_mtime_ns, shapes)).encode()

    def name(self, split: str, item: int) -> str:
        return f"{split}[{item}]"

    def decode(self, split: str, chunks: Sequence[np.ndarray]) -> Iterator[tuple[np.ndarray, list[int]]]:
        from PIL import Image

        r = self.resolution
        for chunk in chunks:
            x = self._convert(np.asarray(self.images[split][chunk]), split)
            if x.shape[2:] != (r, r):
                x = np.stack([resize_crop(Image.fromarray(img.transpose(1, 2, 0)), r) for img in x])
            yield x, []

    def close(self) -> None:
        pass


@contextlib.contextmanager
def _open_source(kind: str, path: Path, resolution: int, workers: int) -> Iterator[_FolderSource | _ArraySource]:
    """The source of ``kind`` at ``path``; its worker pool is stopped on exit."""
    source = _FolderSource(scan_imagefolder(path), resolution, workers) if kind == "imagefolder" \
        else _ArraySource(kind, path, resolution)
    try:
        yield source
    finally:
        source.close()


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class _Plan:
    """Which source images go where, in which order: fixed before anything is decoded."""

    classes: tuple[str, ...]
    remap: np.ndarray                 # source label -> kept label, -1 when dropped
    train: np.ndarray                 # source indices of the kept training images, in source order
    test: np.ndarray | None
    candidates: np.ndarray            # positions in ``train``, in the order minival takes them
    val_size: int
    seed: int
    options: dict[str, Any]
    source_format: str
    source: str
    resolution: int
    digest: str


def _plan(source: _FolderSource | _ArraySource, resolution: int, classes: int | Sequence[str] | None,
          per_class: int | None, val_size: int | None, seed: int) -> _Plan:
    keep = _keep_classes(source.classes, classes)
    remap = np.full(len(source.classes), -1, dtype=np.int64)
    remap[keep] = np.arange(len(keep))
    train = _select(remap[source.labels["train"]], per_class)
    test = _select(remap[source.labels["test"]], None) if "test" in source.labels else None
    if test is not None and len(test) == 0:
        test = None  # the classes kept have no test images: no test split
    if val_size is None:
        val_size = default_val_size(len(train))
    if val_size >= len(train):
        raise DataError(f"prepare: val_size {val_size:,} leaves no training images ({len(train):,} in {source.where})")
    candidates = np.random.default_rng(seed).permutation(len(train))
    kept = tuple(source.classes[i] for i in keep)
    options = {"classes": list(kept) if not isinstance(classes, int) and classes is not None else classes,
               "images_per_class": per_class, "val_size": val_size, "seed": seed}
    digest = hashlib.sha256()
    digest.update(json.dumps([FORMAT, VERSION, source.kind, resolution, options, kept]).encode())
    digest.update(source.fingerprint())
    for array in (train, test if test is not None else np.zeros(0, np.int64)):
        digest.update(array.tobytes())
    return _Plan(kept, remap, train, test, candidates, val_size, seed, options, source.kind, source.where,
                 resolution, digest.hexdigest())


def _keep_classes(names: tuple[str, ...], classes: int | Sequence[str] | None) -> list[int]:
    if classes is None:
        keep = list(range(len(names)))
    elif isinstance(classes, int) and not isinstance(classes, bool):
        if classes < 2:
            raise DataError(f"prepare: classes {classes} (a classifier needs at least 2 classes)")
        if classes > len(names):
            raise DataError(f"prepare: classes {classes} but the source has {len(names)}")
        keep = list(range(classes))
    else:
        wanted = list(dict.fromkeys(classes))
        unknown = [c for c in wanted if c not in names]
        if unknown:
            shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
            raise DataError(f"prepare: class {unknown[0]!r} is not in the source (its classes: {shown})")
        keep = sorted(names.index(c) for c in wanted)  # labels keep the source's order
        if len(keep) < 2:
            raise DataError(f"prepare: classes {wanted} (a classifier needs at least 2 classes)")
    return keep


def _select(labels: np.ndarray, per_class: int | None) -> np.ndarray:
    """Indices of the images of kept classes (label >= 0), at most ``per_class`` of each, in order."""
    items = np.flatnonzero(labels >= 0)
    if per_class is None:
        return items
    kept = labels[items]
    order = np.argsort(kept, kind="stable")
    first = np.searchsorted(kept[order], kept[order], side="left")
    rank = np.empty(len(items), dtype=np.int64)
    rank[order] = np.arange(len(items)) - first  # an image's position within its class
    return items[rank < per_class]


# --------------------------------------------------------------------------- the writer


class _Rows:
    """Rows appended to a ``.npy`` whose header announces ``capacity`` (shrunk when done)."""

    def __init__(self, path: Path, row_shape: tuple[int, ...], dtype: np.dtype, capacity: int, done: int) -> None:
        self.path, self.row_shape, self.dtype = path, row_shape, np.dtype(dtype)
        self.row_bytes = math.prod(row_shape) * self.dtype.itemsize
        if done == 0 or not path.is_file():
            with path.open("wb") as f:
                self._header(f, capacity)
        self.file: BinaryIO = path.open("r+b")
        self.offset = self._data_offset()
        # rows past what progress.json vouches for may be half written: overwrite them
        self.file.truncate(self.offset + done * self.row_bytes)
        self.file.seek(self.offset + done * self.row_bytes)

    def _header(self, f: BinaryIO, rows: int) -> None:
        np.lib.format.write_array_header_1_0(
            f, {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                "shape": (rows, *self.row_shape)})

    def _data_offset(self) -> int:
        self.file.seek(0)
        npy_header(self.file)
        return self.file.tell()

    def append(self, rows: np.ndarray) -> None:
        self.file.write(np.ascontiguousarray(rows, dtype=self.dtype).data)

    def sync(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())

    def finish(self, rows: int) -> None:
        """Write the final row count into the header and cut the file to it."""
        self.file.seek(0)
        self._header(self.file, rows)
        # numpy pads headers so the row count can grow to 21 digits in place
        assert self.file.tell() == self.offset, "the header keeps its length"
        self.file.truncate(self.offset + rows * self.row_bytes)
        self.file.close()

    def close(self) -> None:
        self.file.close()


class _Writer:
    """Fills ``OUT.partial/`` split by split, resumably, then moves it to ``OUT``."""

    def __init__(self, partial: Path, plan: _Plan, source: _FolderSource | _ArraySource,
                 progress: Callable[[str, int, int], None] | None) -> None:
        self.partial, self.plan, self.source, self.progress = partial, plan, source, progress
        self.state = self._load_state()
        self.resumed_from = sum(s["consumed"] for s in self.state["splits"].values())
        self.last_save = time.monotonic()
        self.rows: dict[str, tuple[_Rows, _Rows]] = {}

    # ----------------------------------------------------------------- state
    def _fresh_state(self) -> dict[str, Any]:
        return {"format": FORMAT + "-progress", "plan": self.plan.digest, "sums": dataclasses.asdict(ChannelSums()),
                "skipped": [], "splits": {s: {"consumed": 0, "written": 0} for s in SPLITS}}

    def _load_state(self) -> dict[str, Any]:
        path = self.partial / PROGRESS
        state = None
        if path.is_file():
            try:
                state = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                state = None
        if state is None or state.get("plan") != self.plan.digest or not self._on_disk(state):
            # never started, or stale (other options, a changed source, files gone): begin again
            self._clear()
            state = self._fresh_state()
        return state

    def _sums(self) -> ChannelSums:
        sums = self.state["sums"]
        return ChannelSums(sums["pixels"], tuple(sums["total"]), tuple(sums["total_sq"]))

    def _on_disk(self, state: dict[str, Any]) -> bool:
        """Whether the partial files hold at least the rows ``state`` says were written."""
        r = self.plan.resolution
        for split, done in state["splits"].items():
            for key, row_bytes in (("x", 3 * r * r), ("y", 8)):
                path = self.partial / f"{split}_{key}.npy"
                if done["written"] and (not path.is_file() or _rows_in(path, row_bytes) < done["written"]):
                    return False
        return True

    def _clear(self) -> None:
        """Remove what an earlier prepare left in ``OUT.partial`` (only files it writes)."""
        self.partial.mkdir(parents=True, exist_ok=True)
        for name in [PROGRESS, PROGRESS + ".tmp", MANIFEST, MANIFEST + ".tmp"] + [
                f"{s}_{k}.npy" for s in SPLITS for k in "xy"]:
            (self.partial / name).unlink(missing_ok=True)

    def _save(self, *, force: bool = False) -> None:
        if not force and time.monotonic() - self.last_save < _SAVE_EVERY_S:
            return
        for x_rows, y_rows in self.rows.values():
            x_rows.sync()
            y_rows.sync()
        _write_atomic(self.partial / PROGRESS, json.dumps(self.state))
        self.last_save = time.monotonic()

    # ----------------------------------------------------------------- stages
    def run(self) -> int:
        """Decode every split (minival, train, test); returns the images decoded by this call."""
        before = self.resumed_from
        try:
            self._stage("minival", self.plan.train[self.plan.candidates], limit=self.plan.val_size)
            consumed = self.state["splits"]["minival"]["consumed"]
            keep = np.ones(len(self.plan.train), dtype=bool)
            keep[self.plan.candidates[:consumed]] = False  # minival's images, bad ones included
            self._stage("train", self.plan.train[keep])
            if self.plan.test is not None:
                self._stage("test", self.plan.test)
        finally:
            # an interruption (Ctrl-C, an error) keeps every row written so far
            if self.rows:
                self._save(force=True)
        return sum(s["consumed"] for s in self.state["splits"].values()) - before

    def _stage(self, split: str, items: np.ndarray, *, limit: int | None = None) -> None:
        """Decode ``items`` (source indices) in order into ``split``; stop at ``limit`` good images."""
        done = self.state["splits"][split]
        source_split = "test" if split == "test" else "train"
        labels = self.plan.remap[self.source.labels[source_split]]
        capacity = limit if limit is not None else len(items)
        r = self.plan.resolution
        self.rows[split] = (_Rows(self.partial / f"{split}_x.npy", (3, r, r), np.uint8, capacity, done["written"]),
                            _Rows(self.partial / f"{split}_y.npy", (), np.int64, capacity, done["written"]))
        goal = limit if limit is not None else len(items)
        while done["consumed"] < len(items) and (limit is None or done["written"] < limit):
            # without a limit, the rest; with one, only as many as still missing, so the
            # minival takes exactly the first `limit` readable images of its permutation
            stop = len(items) if limit is None else min(len(items), done["consumed"] + limit - done["written"])
            batch = items[done["consumed"]:stop]
            chunks = [batch[i:i + self.source.chunk] for i in range(0, len(batch), self.source.chunk)]
            for chunk, (images, bad) in zip(chunks, self.source.decode(source_split, chunks)):
                good = np.delete(chunk, bad)
                self.rows[split][0].append(images)
                self.rows[split][1].append(labels[good])
                if split == "train":
                    self.state["sums"] = dataclasses.asdict(self._sums() + ChannelSums.of(images))
                self.state["skipped"] += [self.source.name(source_split, int(chunk[i])) for i in bad]
                done["consumed"] += len(chunk)
                done["written"] += len(images)
                self._save()
                if self.progress is not None:
                    self.progress(split, done["written"] if limit is not None else done["consumed"], goal)
        if done["written"] == 0:
            raise DataError(f"prepare: no readable images for {split} in {self.plan.source}")

    # ----------------------------------------------------------------- the end
    def finish(self, out: Path) -> Manifest:
        """Fix the row counts, checksum the files, write the manifest, move the folder to ``out``."""
        files: dict[str, dict[str, Any]] = {}
        for split, (x_rows, y_rows) in self.rows.items():
            written = self.state["splits"][split]["written"]
            for rows in (x_rows, y_rows):
                rows.finish(written)
                files[rows.path.name] = {"shape": [written, *rows.row_shape], "dtype": str(rows.dtype)}
        if self.progress is not None:
            self.progress("checksums", 0, len(files))
        with ThreadPoolExecutor(min(len(files), _usable_cores())) as pool:
            for name, digest in zip(files, pool.map(lambda n: file_sha256(self.partial / n), files)):
                files[name]["sha256"] = digest
        mean, std = self._sums().stats()
        manifest = Manifest(
            resolution=self.plan.resolution,
            classes=self.plan.classes,
            hflip=self.source.hflip,
            mean=mean,
            std=std,
            images={split: self.state["splits"][split]["written"] for split in self.rows},
            minival_seed=self.plan.seed,
            files=files,
            source=self.plan.source,
            source_format=self.plan.source_format,
            skipped=tuple(self.state["skipped"]),
            options=self.plan.options,
            plan=self.plan.digest,
        )
        _write_atomic(self.partial / MANIFEST, manifest.to_json())
        (self.partial / PROGRESS).unlink()
        if out.is_dir():
            out.rmdir()  # empty (checked before anything was written)
        os.replace(self.partial, out)
        return manifest


def _rows_in(path: Path, row_bytes: int) -> int:
    """Whole rows after the header of a partial ``.npy`` (0 when it has no readable header)."""
    try:
        with path.open("rb") as f:
            npy_header(f)
            return (path.stat().st_size - f.tell()) // row_bytes
    except (ValueError, OSError, SyntaxError):
        return 0


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
