"""Readers of every source format, each into uint8 ``(N, 3, H, W)`` numpy arrays.

digits (scikit-learn), CIFAR-10/100 (the official pickled batches, read by an unpickler
that admits numpy arrays only), MNIST and Fashion-MNIST (idx files, optionally gzipped),
image folders (decoded with Pillow: shorter side resized, centre crop), ``.npz`` files
(arrays ``x``, ``y`` and optionally ``x_test``, ``y_test``) and synthetic noise. Used by
``load_dataset`` for small sets and by ``nas data prepare`` for large ones; every fault is
a :class:`DataError` of one line naming the file and what is wrong with it.
"""
from __future__ import annotations

import gzip
import hashlib
import math
import pickle
import tarfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np

from nas.data.dataset import DataError

__all__ = [
    "LOADERS",
    "ImageFolder",
    "NpzContents",
    "Raw",
    "SourceArgs",
    "check_classes",
    "check_labels",
    "decode_image",
    "npy_header",
    "npz_images",
    "open_npz",
    "resize_crop",
    "scan_imagefolder",
    "to_nchw3",
]

_DEFAULT_DATA_DIR = Path("data")
_IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
)
_DOWNLOAD_TIMEOUT_S = 60.0
# A largest label this many times the number of distinct labels is a stray value, not a
# class: a classifier built for it would be huge and meaningless.
_MAX_LABEL_SPREAD = 10


class Raw(NamedTuple):
    """A source read into memory: numpy arrays, the test part optional."""

    x: np.ndarray  # uint8 (N, 3, H, W)
    y: np.ndarray  # int64 (N,)
    x_test: np.ndarray | None
    y_test: np.ndarray | None
    num_classes: int
    hflip: bool
    classes: tuple[str, ...] = ()


@dataclass(frozen=True)
class SourceArgs:
    """What a loader may need: ``load_dataset``'s arguments, validated."""

    name: str
    data_dir: Path | None
    seed: int = 0
    download: bool = False
    resolution: int | None = None
    num_classes: int = 10
    size: int = 1024


# --------------------------------------------------------------------------- shared checks


def to_nchw3(x: np.ndarray, what: str) -> np.ndarray:
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


def check_labels(y: np.ndarray, n: int, what: str) -> np.ndarray:
    """Labels as int64, one per image, non-negative integers."""
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n:
        raise DataError(f"{what}: {len(y) if y.ndim == 1 else tuple(y.shape)} labels for {n} images")
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{what}: labels have dtype {y.dtype} (expected integers)")
    if n and int(y.min()) < 0:
        raise DataError(f"{what}: negative label {int(y.min())}")
    return y.astype(np.int64)


def check_classes(labels: list[np.ndarray], what: str, *, named: int = 0) -> int:
    """The number of classes K the labels number 0..K-1, refusing strays and single classes.

    Gaps are tolerated (a subset of a labelled set), a stray value is not: the largest
    label may be at most ``10 x`` the number of distinct labels, and there may be no more
    classes than images. ``named`` class names count as classes even when unused.
    """
    values = np.concatenate([np.unique(y) for y in labels]) if labels else np.zeros(0, np.int64)
    images = sum(len(y) for y in labels)
    distinct = len(np.unique(values))
    top = int(values.max()) if len(values) else -1
    count = max(top + 1, named)
    if top + 1 > max(_MAX_LABEL_SPREAD * distinct, named) or top + 1 > max(images, named):
        raise DataError(
            f"{what}: label {top:,} is far beyond the other labels ({distinct:,} distinct among {images:,} images);"
            " labels must number the classes 0..K-1"
        )
    if count < 2:
        raise DataError(f"{what}: labels of a single class (a classifier needs at least 2 classes)")
    return count


def _need_dir(args: SourceArgs) -> Path:
    return args.data_dir if args.data_dir is not None else _DEFAULT_DATA_DIR


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


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


def _load_digits(args: SourceArgs) -> Raw:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # sklearn's digits are 0..16 intensities; stretch to the usual 0..255
    images = np.clip(np.rint(bunch.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    return Raw(to_nchw3(images, "digits"), bunch.target.astype(np.int64), None, None, 10, False)


# --------------------------------------------------------------------------- CIFAR


_CIFAR = {
    "cifar10": {
        "folder": "cifar-10-batches-py",
        "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
        "test": ("test_batch",),
        "labels": b"labels",
        "classes": 10,
        "meta": ("batches.meta", b"label_names"),
        "url": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "md5": "c58f30108f718f92721af3b95e74349a",
    },
    "cifar100": {
        "folder": "cifar-100-python",
        "train": ("train",),
        "test": ("test",),
        "labels": b"fine_labels",
        "classes": 100,
        "meta": ("meta", b"fine_label_names"),
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


def _load_cifar(args: SourceArgs) -> Raw:
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
    names = _cifar_class_names(folder / spec["meta"][0], spec["meta"][1], classes)
    return Raw(x, y, test[0] if test else None, test[1] if test else None, classes, True, names)


def _cifar_class_names(path: Path, key: bytes, classes: int) -> tuple[str, ...]:
    """The class names from the batches' meta file; none (labels only) when it is missing or odd."""
    try:
        with path.open("rb") as f:
            meta = _NumpyOnlyUnpickler(f, encoding="bytes").load()
        names = tuple(n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in meta[key])
    except Exception:  # the names are a nicety: any fault of the meta file leaves them out
        return ()
    return names if len(names) == classes else ()


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
        "classes": tuple(str(d) for d in range(10)),
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
        "classes": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                    "Ankle boot"),
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


def _load_mnist(args: SourceArgs) -> Raw:
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
    y = check_labels(_read_idx(args.name, paths["train_y"], images=False), len(x), f"{args.name}: {paths['train_y']}")
    x_test = y_test = None
    if paths["test_x"] is not None and paths["test_y"] is not None:
        x_test = to_nchw3(_read_idx(args.name, paths["test_x"], images=True), args.name)
        y_test = check_labels(
            _read_idx(args.name, paths["test_y"], images=False), len(x_test), f"{args.name}: {paths['test_y']}"
        )
    for labels, key in ((y, "train_y"), (y_test, "test_y")):
        if labels is not None and len(labels) and int(labels.max()) >= 10:
            raise DataError(f"{args.name}: label {int(labels.max())} in {paths[key]} (expected 0..9)")
    return Raw(to_nchw3(x, args.name), y, x_test, y_test, 10, spec["hflip"], spec["classes"])




# --------------------------------------------------------------------------- image folders


@dataclass(frozen=True)
class ImageFolder:
    """An image folder's layout: classes and image files (relative to ``root``) with labels.

    Attributes:
        root: The folder given.
        classes: Class names (sub-folder names), sorted; a label is an index into them.
        train: ``(path, label)`` of every training image, by class, then file name.
        test: The same for ``val/<class>/``, or ``None`` when there is no such folder.
    """

    root: Path
    classes: tuple[str, ...]
    train: tuple[tuple[str, int], ...]
    test: tuple[tuple[str, int], ...] | None


def scan_imagefolder(root: Path) -> ImageFolder:
    """List an image folder: ``train/<class>/*`` (+ optional ``val/<class>/*``), or ``<class>/*``.

    Raises:
        DataError: No folder, fewer than 2 classes, no images, a class only in ``val``.
    """
    if not root.is_dir():
        what = "a file" if root.exists() else "no folder"
        raise DataError(f"imagefolder: {root} is {what} (expected a folder with train/<class>/*.jpg or <class>/*.jpg)")
    train_dir = root / "train" if (root / "train").is_dir() else root
    classes = _subfolders(train_dir)
    if train_dir == root:
        classes = [c for c in classes if c not in ("val", "test")]
    if not classes:
        raise DataError(f"imagefolder: no class folders in {train_dir} (expected <class>/*.jpg)")
    if len(classes) < 2:
        raise DataError(f"imagefolder: {train_dir} has 1 class folder ({classes[0]!r}); needs at least 2 classes")
    train = _list_images(root, train_dir, classes)
    test = None
    val_dir = root / "val"
    if train_dir != root and val_dir.is_dir():
        extra = [c for c in _subfolders(val_dir) if c not in classes]
        if extra:
            raise DataError(f"imagefolder: class {extra[0]!r} in {val_dir} has no folder in {train_dir}")
        test = _list_images(root, val_dir, classes)
    return ImageFolder(root, tuple(classes), train, test)


def _subfolders(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _list_images(root: Path, folder: Path, classes: list[str]) -> tuple[tuple[str, int], ...]:
    items = [
        (str(path.relative_to(root)), label)
        for label, cls in enumerate(classes) if (folder / cls).is_dir()
        for path in sorted((folder / cls).iterdir())
        if path.suffix.lower() in _IMAGE_SUFFIXES and path.is_file()
    ]
    if not items:
        raise DataError(f"imagefolder: no images in {folder} (expected <class>/*.jpg or *.png)")
    return tuple(items)


def decode_image(path: Path, resolution: int) -> np.ndarray:
    """Decode one image to RGB ``(3, R, R)``: shorter side resized to ``resolution``, centre crop.

    Raises:
        DataError: The file is not a readable image.
    """
    from PIL import Image

    try:
        with Image.open(path) as img:
            w, h = img.size
            scale = resolution / min(w, h)
            # JPEG decodes at 1/2, 1/4 or 1/8 scale in the DCT several times faster than in
            # full; draft() never goes below the size asked for, the resize does the rest
            img.draft("RGB", (math.ceil(w * scale), math.ceil(h * scale)))
            return resize_crop(img.convert("RGB"), resolution)
    except Exception as exc:  # Pillow raises many types for bad files
        raise DataError(f"imagefolder: cannot read {path}: {_one_line(exc)}") from None


def resize_crop(img: Any, resolution: int) -> np.ndarray:
    """A PIL RGB image with its shorter side resized to ``resolution``, centre-cropped, as ``(3, R, R)``."""
    from PIL import Image

    w, h = img.size
    scale = resolution / min(w, h)
    size = (max(resolution, round(w * scale)), max(resolution, round(h * scale)))
    if size != (w, h):
        img = img.resize(size, Image.Resampling.BILINEAR, reducing_gap=3.0)
    left = (size[0] - resolution) // 2
    top = (size[1] - resolution) // 2
    img = img.crop((left, top, left + resolution, top + resolution))
    return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)


def _decode_all(folder: ImageFolder, items: tuple[tuple[str, int], ...], resolution: int) -> tuple[np.ndarray, np.ndarray]:
    x = np.stack([decode_image(folder.root / path, resolution) for path, _ in items])
    return x, np.asarray([label for _, label in items], dtype=np.int64)


def _load_imagefolder(args: SourceArgs) -> Raw:
    if args.data_dir is None:
        raise DataError("imagefolder: pass --data-dir (an image folder or an .npz)")
    if args.data_dir.suffix == ".npz" or args.data_dir.is_file():
        return _read_npz(args.name, args.data_dir)
    folder = scan_imagefolder(args.data_dir)
    resolution = args.resolution or 64
    x, y = _decode_all(folder, folder.train, resolution)
    x_test, y_test = _decode_all(folder, folder.test, resolution) if folder.test is not None else (None, None)
    return Raw(x, y, x_test, y_test, len(folder.classes), True, folder.classes)


# --------------------------------------------------------------------------- npz


class NpzContents(NamedTuple):
    """An ``.npz`` opened and checked; images as stored (converted chunk by chunk with :func:`npz_images`).

    Members stored uncompressed (``np.savez``) are memory-mapped when asked, so a large file
    is never read whole.
    """

    path: Path
    x: np.ndarray
    y: np.ndarray  # int64
    x_test: np.ndarray | None
    y_test: np.ndarray | None
    num_classes: int
    hflip: bool
    classes: tuple[str, ...]


def open_npz(name: str, path: Path, *, mmap: bool = False) -> NpzContents:
    """Open an ``.npz`` with arrays ``x``, ``y`` (+ ``x_test``, ``y_test``, ``classes``, ``hflip``).

    Raises:
        DataError: Not a readable file, missing arrays, no images, bad labels.
    """
    if path.is_dir():
        raise DataError(f"{name}: {path} is a folder (expected an .npz file with arrays x and y)")
    if not path.is_file():
        raise DataError(f"{name}: no file {path} (expected an .npz with arrays x and y)")
    try:
        arrays = _npz_members(path, mmap=mmap)
    except Exception as exc:  # zipfile/format errors of a broken or foreign file
        raise DataError(f"{name}: cannot read {path}: {_one_line(exc)}") from None
    for key in ("x", "y"):
        if key not in arrays:
            raise DataError(f"{name}: {path} has no array {key!r} (found {', '.join(sorted(arrays)) or 'none'})")
    if ("x_test" in arrays) != ("y_test" in arrays):
        missing = "y_test" if "x_test" in arrays else "x_test"
        raise DataError(f"{name}: {path} has no array {missing!r} (x_test and y_test come together)")
    x, x_test = arrays["x"], arrays.get("x_test")
    for key, images in (("x", x), ("x_test", x_test)):
        if images is not None:
            if images.ndim == 0 or len(images) == 0:
                raise DataError(f"{name}: {key} in {path} has no images (shape {tuple(images.shape)})")
            to_nchw3(images[:1], f"{name}: {key} in {path}")  # the layout, checked on one image
    if x_test is not None and to_nchw3(x_test[:1], "").shape[2:] != to_nchw3(x[:1], "").shape[2:]:
        raise DataError(f"{name}: x_test in {path} is {x_test.shape[1:]}, x is {x.shape[1:]}")
    y = check_labels(arrays["y"], len(x), f"{name}: y in {path}")
    y_test = check_labels(arrays["y_test"], len(x_test), f"{name}: y_test in {path}") if x_test is not None else None
    classes = tuple(str(c) for c in arrays["classes"]) if "classes" in arrays else ()
    labels = [y] if y_test is None else [y, y_test]
    num_classes = check_classes(labels, f"{name}: y in {path}", named=len(classes))
    if classes and len(classes) < num_classes:
        raise DataError(f"{name}: classes in {path} names {len(classes)} classes, but the labels go up to {num_classes - 1}")
    hflip = bool(arrays["hflip"]) if "hflip" in arrays else True
    return NpzContents(path, x, y, x_test, y_test, num_classes, hflip, classes)


def npz_images(name: str, path: Path, x: np.ndarray, key: str) -> np.ndarray:
    """Images of an ``.npz`` (uint8, integers 0..255 or floats in [0, 1]) as uint8 ``(N, 3, H, W)``."""
    what = f"{name}: {key} in {path}"
    x = np.asarray(x)
    if x.dtype != np.uint8:
        if np.issubdtype(x.dtype, np.floating) and np.isnan(x).any():
            raise DataError(f"{what} contains NaN (expected uint8 0..255 or floats in [0, 1])")
        if np.issubdtype(x.dtype, np.integer) and x.size and 0 <= x.min() and x.max() <= 255:
            x = x.astype(np.uint8)
        elif np.issubdtype(x.dtype, np.floating) and x.size and 0.0 <= x.min() and x.max() <= 1.0:
            x = np.rint(x * 255.0).astype(np.uint8)
        else:
            raise DataError(f"{what} has dtype {x.dtype} (expected uint8 0..255 or floats in [0, 1])")
    return to_nchw3(x, what)


def _read_npz(name: str, path: Path) -> Raw:
    """An ``.npz`` read whole into memory."""
    npz = open_npz(name, path)
    x = npz_images(name, path, npz.x, "x")
    x_test = npz_images(name, path, npz.x_test, "x_test") if npz.x_test is not None else None
    return Raw(x, npz.y, x_test, npz.y_test, npz.num_classes, npz.hflip, npz.classes)


def _npz_members(path: Path, *, mmap: bool) -> dict[str, np.ndarray]:
    """Every array of an ``.npz``; uncompressed members memory-mapped when ``mmap``."""
    with zipfile.ZipFile(path) as zf, np.load(path, allow_pickle=False) as npz:
        infos = {info.filename: info for info in zf.infolist()}
        out = {}
        for key in npz.files:
            info = infos.get(key + ".npy")
            stored = info is not None and info.compress_type == zipfile.ZIP_STORED
            out[key] = _map_member(path, info) if mmap and stored else npz[key]
        return out


def _map_member(path: Path, info: zipfile.ZipInfo) -> np.ndarray:
    """Memory-map an uncompressed ``.npy`` member in place: its bytes lie in the zip as they are."""
    with path.open("rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)  # the zip local file header; name and extra field lengths at 26 and 28
        name_len, extra_len = int.from_bytes(local[26:28], "little"), int.from_bytes(local[28:30], "little")
        f.seek(info.header_offset + 30 + name_len + extra_len)
        shape, fortran, dtype = npy_header(f)
        offset = f.tell()
    if dtype.hasobject:
        raise ValueError(f"{info.filename} holds Python objects")
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")


def npy_header(f: Any) -> tuple[tuple[int, ...], bool, np.dtype]:
    """``(shape, fortran_order, dtype)`` from the ``.npy`` header at the file's position (left after it)."""
    version = np.lib.format.read_magic(f)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    return read(f)


def _load_npz(args: SourceArgs) -> Raw:
    if args.data_dir is None:
        raise DataError("npz: pass --data-dir pointing to an .npz file with arrays x and y")
    return _read_npz(args.name, args.data_dir)


# --------------------------------------------------------------------------- synthetic


def _load_synthetic(args: SourceArgs) -> Raw:
    if isinstance(args.num_classes, bool) or args.num_classes < 2:
        raise DataError(f"synthetic: num_classes must be >= 2, got {args.num_classes!r}")
    if isinstance(args.size, bool) or args.size < 2:
        raise DataError(f"synthetic: size must be >= 2, got {args.size!r}")
    res = args.resolution or 32
    rng = np.random.default_rng(args.seed)
    x = rng.integers(0, 256, size=(args.size, 3, res, res), dtype=np.uint8)
    y = rng.integers(0, args.num_classes, size=args.size).astype(np.int64)
    return Raw(x, y, None, None, args.num_classes, True)


LOADERS: dict[str, Callable[[SourceArgs], Raw]] = {
    "digits": _load_digits,
    "cifar10": _load_cifar,
    "cifar100": _load_cifar,
    "mnist": _load_mnist,
    "fashion_mnist": _load_mnist,
    "imagefolder": _load_imagefolder,
    "npz": _load_npz,
    "synthetic": _load_synthetic,
}
