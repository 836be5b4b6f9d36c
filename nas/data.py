"""Data sets as uint8 tensors, ready to be moved to the device once.

Every data set is served as 3-channel uint8 images ``(N, 3, H, W)`` (grayscale is
replicated) with int64 labels, so one architecture fits every data set. The
``search`` split carves a validation set out of the *training* data (the papers'
minival) so that the test split is never looked at during a search; the ``final``
split trains on all training data and validates on the official test split.
"""
from __future__ import annotations

import gzip
import hashlib
import pickle
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np
import torch

__all__ = [
    "DATASETS",
    "DataError",
    "Dataset",
    "load_dataset",
    "prepare_imagefolder",
]

DATASETS: tuple[str, ...] = (
    "digits",
    "cifar10",
    "cifar100",
    "mnist",
    "fashion_mnist",
    "imagefolder",
    "npz",
    "synthetic",
)

_DEFAULT_DATA_DIR = Path("data")
_IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
)
_DOWNLOAD_TIMEOUT_S = 60.0


class DataError(ValueError):
    """A user-caused data problem; ``str()`` is one line naming the data set, path and fault."""


@dataclass(frozen=True, eq=False)
class Dataset:
    """A data set split into train and validation parts, held as CPU tensors.

    Attributes:
        name: The data set's name (one of ``DATASETS``).
        train_x: uint8 images, ``(N, 3, H, W)``.
        train_y: int64 labels, ``(N,)``.
        val_x: uint8 images, ``(M, 3, H, W)``.
        val_y: int64 labels, ``(M,)``.
        num_classes: Number of classes; labels lie in ``[0, num_classes)``.
        hflip: Whether a horizontal flip is a label-preserving augmentation.
        mean: Per-channel mean of ``train_x`` in [0, 1] units.
        std: Per-channel standard deviation of ``train_x`` in [0, 1] units.
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    num_classes: int
    hflip: bool
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


class _Raw(NamedTuple):
    """What a loader returns before splitting: numpy arrays, test part optional."""

    x: np.ndarray  # uint8 (N, 3, H, W)
    y: np.ndarray  # int64 (N,)
    x_test: np.ndarray | None
    y_test: np.ndarray | None
    num_classes: int
    hflip: bool


def load_dataset(
    name: str,
    *,
    data_dir: str | Path | None = None,
    split: str = "search",
    val_fraction: float = 0.2,
    seed: int = 0,
    download: bool = False,
    resolution: int | None = None,
    num_classes: int = 10,
    size: int = 1024,
) -> Dataset:
    """Load a data set and split it into train and validation parts.

    Args:
        name: One of ``DATASETS``.
        data_dir: Folder holding the files (for ``npz``: the file; for ``imagefolder``:
            the folder or a prepared ``.npz``). Default ``./data`` where one is needed.
        split: ``"search"`` (validation carved from the training data with ``seed``) or
            ``"final"`` (all training data; validation = the official test split where
            the data set has one, else as ``"search"``).
        val_fraction: Share of the training data held out by the ``search`` split.
        seed: Seed of the held-out permutation (and of ``synthetic`` data).
        download: Fetch CIFAR / MNIST files into ``data_dir`` when they are missing.
        resolution: Decode size for ``imagefolder`` (default 64) and image size for
            ``synthetic`` (default 32); other data sets keep their native size (the
            trainer resizes once on the device).
        num_classes: Classes of ``synthetic`` data.
        size: Samples of ``synthetic`` data (before the split).

    Returns:
        The data set, CPU tensors.

    Raises:
        DataError: Unknown name, bad argument, missing or unreadable files.
    """
    if name not in _LOADERS:
        raise DataError(f"unknown dataset {name!r} (choose from {', '.join(DATASETS)})")
    if split not in ("search", "final"):
        raise DataError(f"{name}: unknown split {split!r} (choose from search, final)")
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"{name}: val_fraction must lie in (0, 1), got {val_fraction!r}")
    if resolution is not None and (isinstance(resolution, bool) or resolution < 1):
        raise DataError(f"{name}: resolution must be a positive int, got {resolution!r}")
    args = _Args(
        name=name,
        data_dir=Path(data_dir).expanduser() if data_dir is not None else None,
        seed=seed,
        download=download,
        resolution=resolution,
        num_classes=num_classes,
        size=size,
    )
    raw = _LOADERS[name](args)
    return _finish(name, raw, split=split, val_fraction=val_fraction, seed=seed)


def prepare_imagefolder(src: str | Path, out: str | Path, *, resolution: int) -> Path:
    """Decode an image folder once into a compressed ``.npz`` for fast repeated loading.

    A search trains hundreds of candidates; decoding the JPEGs for each of them would
    dominate the run, so the folder is decoded and resized here once.

    Args:
        src: Folder with ``train/<class>/*`` (and optionally ``val/<class>/*``), or a
            folder whose sub-folders are the classes.
        out: Output file; ``.npz`` is appended when missing.
        resolution: Side of the square images stored.

    Returns:
        The path of the written file. Load it with
        ``load_dataset("imagefolder", data_dir=path)`` (or ``"npz"``).

    Raises:
        DataError: Missing folder, no classes, unreadable image, bad resolution.
    """
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
        raise DataError(f"imagefolder: resolution must be a positive int, got {resolution!r}")
    folder = _read_imagefolder(Path(src).expanduser(), resolution)
    out_path = Path(out).expanduser()
    if out_path.suffix != ".npz":
        out_path = out_path.with_name(out_path.name + ".npz")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {
        "x": folder.x,
        "y": folder.y,
        "classes": np.array(folder.classes, dtype=np.str_),
        "hflip": np.array(True),
    }
    if folder.x_test is not None and folder.y_test is not None:
        arrays["x_test"] = folder.x_test
        arrays["y_test"] = folder.y_test
    np.savez_compressed(out_path, **arrays)
    return out_path


# --------------------------------------------------------------------------- helpers


@dataclass(frozen=True)
class _Args:
    name: str
    data_dir: Path | None
    seed: int
    download: bool
    resolution: int | None
    num_classes: int
    size: int


def _finish(name: str, raw: _Raw, *, split: str, val_fraction: float, seed: int) -> Dataset:
    """Split, convert to tensors and compute normalisation statistics."""
    if split == "final" and raw.x_test is not None and raw.y_test is not None:
        train_x, train_y, val_x, val_y = raw.x, raw.y, raw.x_test, raw.y_test
    else:
        n = len(raw.x)
        if n < 2:
            raise DataError(f"{name}: {n} training sample(s); need at least 2 to hold out a validation set")
        n_val = min(n - 1, max(1, int(round(n * val_fraction))))
        order = np.random.default_rng(seed).permutation(n)
        val_idx, train_idx = np.sort(order[:n_val]), np.sort(order[n_val:])
        train_x, train_y = raw.x[train_idx], raw.y[train_idx]
        val_x, val_y = raw.x[val_idx], raw.y[val_idx]
    tx = torch.from_numpy(np.ascontiguousarray(train_x, dtype=np.uint8))
    mean, std = _channel_stats(tx)
    return Dataset(
        name=name,
        train_x=tx,
        train_y=torch.from_numpy(np.ascontiguousarray(train_y, dtype=np.int64)),
        val_x=torch.from_numpy(np.ascontiguousarray(val_x, dtype=np.uint8)),
        val_y=torch.from_numpy(np.ascontiguousarray(val_y, dtype=np.int64)),
        num_classes=raw.num_classes,
        hflip=raw.hflip,
        mean=mean,
        std=std,
    )


def _channel_stats(x: torch.Tensor) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Per-channel mean and std in [0, 1] units, in chunks so big sets need no float copy."""
    total = torch.zeros(3, dtype=torch.float64)
    total_sq = torch.zeros(3, dtype=torch.float64)
    for chunk in torch.split(x, 1024):
        c = chunk.to(torch.float64)
        total += c.sum(dim=(0, 2, 3))
        total_sq += (c * c).sum(dim=(0, 2, 3))
    count = x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / count
    var = (total_sq / count - mean * mean).clamp_min(0.0)
    # a constant channel would divide by zero when normalising
    std = var.sqrt().clamp_min(1.0 / 255.0)
    m = (mean / 255.0).tolist()
    s = (std / 255.0).tolist()
    return (m[0], m[1], m[2]), (s[0], s[1], s[2])


def _to_nchw3(x: np.ndarray, what: str) -> np.ndarray:
    """Bring (N,H,W), (N,H,W,C) or (N,C,H,W) uint8 images to (N, 3, H, W)."""
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4:
        if x.shape[3] in (1, 3) and x.shape[1] not in (1, 3):
            x = x.transpose(0, 3, 1, 2)
        elif x.shape[1] not in (1, 3):
            raise DataError(f"{what}: images of shape {tuple(x.shape)} have neither 1 nor 3 channels")
    else:
        raise DataError(f"{what}: images must be (N,H,W), (N,H,W,C) or (N,C,H,W), got shape {tuple(x.shape)}")
    if x.shape[1] == 1:
        x = np.repeat(x, 3, axis=1)
    return np.ascontiguousarray(x, dtype=np.uint8)


def _check_labels(y: np.ndarray, n: int, what: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n:
        raise DataError(f"{what}: {len(y) if y.ndim == 1 else tuple(y.shape)} labels for {n} images")
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{what}: labels have dtype {y.dtype} (expected integers)")
    if n and int(y.min()) < 0:
        raise DataError(f"{what}: negative label {int(y.min())}")
    return y.astype(np.int64)


def _need_dir(args: _Args) -> Path:
    return args.data_dir if args.data_dir is not None else _DEFAULT_DATA_DIR


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fetch(name: str, url: str, dest: Path, md5: str | None) -> None:
    """Download ``url`` to ``dest`` (via a temporary file) and verify its md5."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as response, tmp.open("wb") as f:
            while block := response.read(1 << 20):
                f.write(block)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        tmp.unlink(missing_ok=True)
        reason = getattr(exc, "reason", exc)
        raise DataError(f"{name}: cannot download {url}: {reason} (offline? place the files in {dest.parent})") from None
    if md5 is not None and _md5(tmp) != md5:
        tmp.unlink(missing_ok=True)
        raise DataError(f"{name}: download of {url} is corrupt (md5 mismatch); try again")
    tmp.replace(dest)


# --------------------------------------------------------------------------- digits


def _load_digits(args: _Args) -> _Raw:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # sklearn's digits are 0..16 intensities; stretch to the usual 0..255
    images = np.clip(np.rint(bunch.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    return _Raw(_to_nchw3(images, "digits"), bunch.target.astype(np.int64), None, None, 10, False)


# --------------------------------------------------------------------------- CIFAR


_CIFAR = {
    "cifar10": {
        "folder": "cifar-10-batches-py",
        "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
        "test": ("test_batch",),
        "labels": b"labels",
        "classes": 10,
        "url": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "md5": "c58f30108f718f92721af3b95e74349a",
    },
    "cifar100": {
        "folder": "cifar-100-python",
        "train": ("train",),
        "test": ("test",),
        "labels": b"fine_labels",
        "classes": 100,
        "url": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "md5": "eb9058c3a382ffc7106e4002c42a8d85",
    },
}

# What a CIFAR batch pickle may reference: numpy arrays and nothing else. Anything else
# (os.system, ...) is refused, so a hostile file cannot run code.
_PICKLE_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _PICKLE_ALLOWED:
            raise pickle.UnpicklingError(f"forbidden global {module}.{name}")
        if module.startswith("numpy.core."):
            # numpy 2 renamed numpy.core to numpy._core; the old name warns
            module = "numpy._core." + module[len("numpy.core."):]
            try:
                return super().find_class(module, name)
            except (ImportError, AttributeError):
                module = "numpy.core." + module[len("numpy._core."):]
        return super().find_class(module, name)


def _read_cifar_batch(name: str, path: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    bad = f"{name}: cannot read {path}: not a CIFAR pickle batch"
    try:
        with path.open("rb") as f:
            entry = _NumpyOnlyUnpickler(f, encoding="bytes").load()
    except OSError as exc:
        raise DataError(f"{name}: cannot read {path}: {exc.strerror or exc}") from None
    except Exception:  # any unpickling fault of a corrupt/truncated file
        raise DataError(bad) from None
    if not isinstance(entry, dict) or b"data" not in entry or label_key not in entry:
        raise DataError(f"{bad} (missing {label_key.decode()!r} or 'data')")
    try:
        data = np.asarray(entry[b"data"], dtype=np.uint8)
        labels = np.asarray(entry[label_key], dtype=np.int64)
    except (TypeError, ValueError):
        raise DataError(bad) from None
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or labels.shape != (data.shape[0],):
        raise DataError(f"{bad} (data shape {tuple(data.shape)}, {labels.size} labels)")
    return data.reshape(-1, 3, 32, 32), labels


def _load_cifar(args: _Args) -> _Raw:
    spec = _CIFAR[args.name]
    root = _need_dir(args)
    folder = root / spec["folder"]
    first = folder / spec["train"][0]
    if not first.exists() and (root / spec["train"][0]).exists():
        folder = root  # data_dir points at the batches folder itself
    elif not first.exists():
        if not args.download:
            raise DataError(
                f"{args.name}: no data in {root} (expected {spec['folder']}/{spec['train'][0]}; "
                "pass --download to fetch it)"
            )
        archive = root / spec["url"].rsplit("/", 1)[1]
        if not archive.exists() or _md5(archive) != spec["md5"]:
            _fetch(args.name, spec["url"], archive, spec["md5"])
        try:
            with tarfile.open(archive, "r:gz") as tar:
                # the "data" filter refuses absolute paths and links out of root
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(root, filter="data")
                else:  # pragma: no cover - Python without PEP 706
                    tar.extractall(root)
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise DataError(f"{args.name}: cannot extract {archive}: {exc}") from None
    parts: dict[str, tuple[np.ndarray, np.ndarray] | None] = {}
    for part in ("train", "test"):
        files = [folder / f for f in spec[part]]
        if part == "test" and not all(f.exists() for f in files):
            parts[part] = None  # no official test split: "final" falls back to "search"
            continue
        batches = []
        # read in order, so a corrupt first batch is reported as such, not as a gap
        for f in files:
            if not f.exists():
                raise DataError(f"{args.name}: missing {f} (incomplete download? delete {folder} and pass --download)")
            batches.append(_read_cifar_batch(args.name, f, spec["labels"]))
        parts[part] = (np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches]))
    x, y = parts["train"]  # type: ignore[misc]
    test = parts["test"]
    classes = spec["classes"]
    for labels, part in ((y, "train"), (test[1] if test else None, "test")):
        if labels is not None and labels.size and (labels.min() < 0 or labels.max() >= classes):
            raise DataError(f"{args.name}: {part} labels outside [0, {classes}) in {folder}")
    return _Raw(x, y, test[0] if test else None, test[1] if test else None, classes, True)


# --------------------------------------------------------------------------- MNIST

_IDX_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}

_MNIST = {
    "mnist": {
        "url": "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "subdirs": ("mnist", "MNIST/raw"),
        "hflip": False,  # a mirrored digit is a different (or no) digit
        "md5": {
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
    },
    "fashion_mnist": {
        "url": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "subdirs": ("fashion_mnist", "FashionMNIST/raw"),
        "hflip": True,  # clothes stay the same class when mirrored
        "md5": {
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
    },
}


def _find_idx(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / (stem + ".gz")):
        if candidate.is_file():
            return candidate
    return None


def _read_idx(name: str, path: Path, *, images: bool) -> np.ndarray:
    """Parse an idx file (magic 2051 for images, 2049 for labels), optionally gzipped."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                blob = f.read()
        else:
            blob = path.read_bytes()
    except (OSError, EOFError) as exc:
        raise DataError(f"{name}: cannot read {path}: {exc}") from None
    magic = 2051 if images else 2049
    ndim = 3 if images else 1
    header = 4 + 4 * ndim
    if len(blob) < header:
        raise DataError(f"{name}: cannot read {path}: file too short for an idx header")
    found = int.from_bytes(blob[:4], "big")
    if found != magic:
        raise DataError(f"{name}: cannot read {path}: bad idx magic number {found} (expected {magic})")
    dims = [int.from_bytes(blob[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    count = int(np.prod(dims))
    if len(blob) - header != count:
        raise DataError(f"{name}: cannot read {path}: {len(blob) - header} data bytes, header says {count}")
    return np.frombuffer(blob, dtype=np.uint8, offset=header).reshape(dims)


def _load_mnist(args: _Args) -> _Raw:
    spec = _MNIST[args.name]
    root = _need_dir(args)
    folders = [root] + [root / s for s in spec["subdirs"]]
    folder = next((f for f in folders if _find_idx(f, _IDX_FILES["train_x"])), None)
    if folder is None:
        if not args.download:
            raise DataError(
                f"{args.name}: no data in {root} (expected {_IDX_FILES['train_x']}[.gz]; "
                "pass --download to fetch it)"
            )
        folder = root / spec["subdirs"][0]
        for filename, md5 in spec["md5"].items():
            if not (folder / filename).exists():
                _fetch(args.name, spec["url"] + filename, folder / filename, md5)
    paths = {k: _find_idx(folder, stem) for k, stem in _IDX_FILES.items()}
    if paths["train_y"] is None:
        raise DataError(f"{args.name}: missing {folder / _IDX_FILES['train_y']}[.gz]")
    x = _read_idx(args.name, paths["train_x"], images=True)  # type: ignore[arg-type]
    y = _check_labels(_read_idx(args.name, paths["train_y"], images=False), len(x), f"{args.name}: {paths['train_y']}")
    x_test = y_test = None
    if paths["test_x"] is not None and paths["test_y"] is not None:
        x_test = _to_nchw3(_read_idx(args.name, paths["test_x"], images=True), args.name)
        y_test = _check_labels(
            _read_idx(args.name, paths["test_y"], images=False), len(x_test), f"{args.name}: {paths['test_y']}"
        )
    num_classes = max(10, int(y.max()) + 1 if len(y) else 10)
    return _Raw(_to_nchw3(x, args.name), y, x_test, y_test, num_classes, spec["hflip"])


# --------------------------------------------------------------------------- image folders


class _Folder(NamedTuple):
    x: np.ndarray
    y: np.ndarray
    x_test: np.ndarray | None
    y_test: np.ndarray | None
    classes: list[str]


def _decode(path: Path, resolution: int) -> np.ndarray:
    """Decode one image to RGB, resize the shorter side to ``resolution``, centre-crop."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            w, h = img.size
            scale = resolution / min(w, h)
            size = (max(resolution, round(w * scale)), max(resolution, round(h * scale)))
            img = img.resize(size, Image.Resampling.BILINEAR, reducing_gap=3.0)
            left = (size[0] - resolution) // 2
            top = (size[1] - resolution) // 2
            img = img.crop((left, top, left + resolution, top + resolution))
            return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)
    except Exception as exc:  # Pillow raises many types for bad files
        raise DataError(f"imagefolder: cannot read {path}: {exc}") from None


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES)


def _read_split(folder: Path, classes: list[str], resolution: int) -> tuple[np.ndarray, np.ndarray]:
    xs: list[np.ndarray] = []
    ys: list[int] = []
    for label, cls in enumerate(classes):
        if not (folder / cls).is_dir():
            continue
        for path in _image_files(folder / cls):
            xs.append(_decode(path, resolution))
            ys.append(label)
    if not xs:
        raise DataError(f"imagefolder: no images in {folder} (expected <class>/*.jpg or *.png)")
    return np.stack(xs), np.asarray(ys, dtype=np.int64)


def _read_imagefolder(root: Path, resolution: int) -> _Folder:
    if not root.is_dir():
        raise DataError(f"imagefolder: no folder {root} (expected train/<class>/*.jpg or <class>/*.jpg)")
    train_dir = root / "train" if (root / "train").is_dir() else root
    classes = sorted(p.name for p in train_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if train_dir is root:
        classes = [c for c in classes if c not in ("val", "test")]
    if not classes:
        raise DataError(f"imagefolder: no class folders in {train_dir} (expected <class>/*.jpg)")
    x, y = _read_split(train_dir, classes, resolution)
    x_test = y_test = None
    val_dir = root / "val"
    if train_dir is not root and val_dir.is_dir():
        extra = sorted(p.name for p in val_dir.iterdir() if p.is_dir() and p.name not in classes)
        if extra:
            raise DataError(f"imagefolder: class {extra[0]!r} in {val_dir} has no folder in {train_dir}")
        x_test, y_test = _read_split(val_dir, classes, resolution)
    return _Folder(x, y, x_test, y_test, classes)


def _load_imagefolder(args: _Args) -> _Raw:
    if args.data_dir is None:
        raise DataError("imagefolder: pass --data-dir (an image folder or a prepared .npz)")
    if args.data_dir.suffix == ".npz" or args.data_dir.is_file():
        return _read_npz(args.name, args.data_dir)
    folder = _read_imagefolder(args.data_dir, args.resolution or 64)
    return _Raw(folder.x, folder.y, folder.x_test, folder.y_test, len(folder.classes), True)


# --------------------------------------------------------------------------- npz


def _npz_images(name: str, path: Path, x: np.ndarray, key: str) -> np.ndarray:
    what = f"{name}: {key} in {path}"
    if x.dtype != np.uint8:
        if np.issubdtype(x.dtype, np.integer) and x.size and 0 <= x.min() and x.max() <= 255:
            x = x.astype(np.uint8)
        elif np.issubdtype(x.dtype, np.floating) and x.size and 0.0 <= x.min() and x.max() <= 1.0:
            x = np.rint(x * 255.0).astype(np.uint8)
        else:
            raise DataError(f"{what} has dtype {x.dtype} (expected uint8 0..255 or floats in [0, 1])")
    return _to_nchw3(x, what)


def _read_npz(name: str, path: Path) -> _Raw:
    if not path.is_file():
        raise DataError(f"{name}: no file {path} (expected an .npz with arrays x and y)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except Exception as exc:  # zipfile/pickle/format errors of a broken file
        raise DataError(f"{name}: cannot read {path}: {exc}") from None
    for key in ("x", "y"):
        if key not in arrays:
            raise DataError(f"{name}: {path} has no array {key!r} (found {', '.join(sorted(arrays)) or 'none'})")
    if ("x_test" in arrays) != ("y_test" in arrays):
        missing = "y_test" if "x_test" in arrays else "x_test"
        raise DataError(f"{name}: {path} has no array {missing!r} (x_test and y_test come together)")
    x = _npz_images(name, path, arrays["x"], "x")
    y = _check_labels(arrays["y"], len(x), f"{name}: y in {path}")
    x_test = y_test = None
    if "x_test" in arrays:
        x_test = _npz_images(name, path, arrays["x_test"], "x_test")
        y_test = _check_labels(arrays["y_test"], len(x_test), f"{name}: y_test in {path}")
        if x_test.shape[2:] != x.shape[2:]:
            raise DataError(f"{name}: x_test in {path} is {x_test.shape[2:]}, x is {x.shape[2:]}")
    top = max(int(y.max()) if y.size else 0, int(y_test.max()) if y_test is not None and y_test.size else 0)
    num_classes = top + 1
    if "classes" in arrays:
        num_classes = max(num_classes, len(arrays["classes"]))
    if num_classes < 2:
        raise DataError(f"{name}: {path} has labels of a single class")
    hflip = bool(arrays["hflip"]) if "hflip" in arrays else True
    return _Raw(x, y, x_test, y_test, num_classes, hflip)


def _load_npz(args: _Args) -> _Raw:
    if args.data_dir is None:
        raise DataError("npz: pass --data-dir pointing to an .npz file with arrays x and y")
    return _read_npz(args.name, args.data_dir)


# --------------------------------------------------------------------------- synthetic


def _load_synthetic(args: _Args) -> _Raw:
    if isinstance(args.num_classes, bool) or args.num_classes < 2:
        raise DataError(f"synthetic: num_classes must be >= 2, got {args.num_classes!r}")
    if isinstance(args.size, bool) or args.size < 2:
        raise DataError(f"synthetic: size must be >= 2, got {args.size!r}")
    res = args.resolution or 32
    rng = np.random.default_rng(args.seed)
    x = rng.integers(0, 256, size=(args.size, 3, res, res), dtype=np.uint8)
    y = rng.integers(0, args.num_classes, size=args.size).astype(np.int64)
    return _Raw(x, y, None, None, args.num_classes, True)


_LOADERS: dict[str, Callable[[_Args], _Raw]] = {
    "digits": _load_digits,
    "cifar10": _load_cifar,
    "cifar100": _load_cifar,
    "mnist": _load_mnist,
    "fashion_mnist": _load_mnist,
    "imagefolder": _load_imagefolder,
    "npz": _load_npz,
    "synthetic": _load_synthetic,
}
assert set(_LOADERS) == set(DATASETS)
