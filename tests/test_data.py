"""Data loading: every format from a fixture written in its real layout, splits, errors."""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nas.data import DATASETS, DataError, Dataset, load_dataset
from nas.data import sources as data_mod


# --------------------------------------------------------------------------- fixtures


def _cifar_batch(n: int, seed: int, label_key: bytes, classes: int) -> dict[bytes, object]:
    rng = np.random.default_rng(seed)
    batch: dict[bytes, object] = {
        b"batch_label": b"training batch",
        b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
        label_key: [int(v) for v in rng.integers(0, classes, size=n)],
        b"filenames": [b"img_%d.png" % i for i in range(n)],
    }
    if label_key == b"fine_labels":
        batch[b"coarse_labels"] = [0] * n
    return batch


def _write_pickle(path: Path, obj: object) -> None:
    # protocol 2: what the official (Python 2) files use
    path.write_bytes(pickle.dumps(obj, protocol=2))


def write_cifar10(root: Path, per_batch: int = 4, test: int = 6) -> dict[str, dict[bytes, object]]:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = {}
    for i in range(1, 6):
        batches[f"data_batch_{i}"] = _cifar_batch(per_batch, i, b"labels", 10)
    batches["test_batch"] = _cifar_batch(test, 99, b"labels", 10)
    for name, batch in batches.items():
        _write_pickle(folder / name, batch)
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"airplane"] * 10}, protocol=2))
    return batches


def write_cifar100(root: Path, train: int = 10, test: int = 5) -> dict[str, dict[bytes, object]]:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    batches = {
        "train": _cifar_batch(train, 1, b"fine_labels", 100),
        "test": _cifar_batch(test, 2, b"fine_labels", 100),
    }
    for name, batch in batches.items():
        _write_pickle(folder / name, batch)
    return batches


def _idx_bytes(array: np.ndarray, magic: int) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_mnist(folder: Path, *, gz: bool, train: int = 12, test: int = 5) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, size=(train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, size=train).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, size=(test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, size=test).astype(np.uint8),
    }
    for name, array in arrays.items():
        blob = _idx_bytes(array, 2051 if array.ndim == 3 else 2049)
        if gz:
            (folder / (name + ".gz")).write_bytes(gzip.compress(blob))
        else:
            (folder / name).write_bytes(blob)
    return arrays


def write_imagefolder(root: Path, *, with_val: bool = True) -> None:
    colours = {"cat": (255, 0, 0), "dog": (0, 0, 255)}
    sizes = [(20, 10), (12, 12), (9, 17)]
    splits = ["train", "val"] if with_val else ["train"]
    for split in splits:
        for cls, colour in colours.items():
            folder = root / split / cls
            folder.mkdir(parents=True)
            count = 3 if split == "train" else 2
            for i in range(count):
                Image.new("RGB", sizes[i], colour).save(folder / f"{i}.png")
    # a grayscale JPEG: must come out as 3 channels too
    Image.new("L", (16, 16), 128).save(root / "train" / "cat" / "gray.jpg")
    (root / "train" / "cat" / "notes.txt").write_text("not an image")


def _ids_npz(path: Path, n: int = 50) -> None:
    """Images that carry their own index, so splits can be checked for overlap."""
    x = np.zeros((n, 4, 4), dtype=np.uint8)
    x[:, 0, 0] = np.arange(n) % 256
    x[:, 0, 1] = np.arange(n) // 256
    np.savez(path, x=x, y=np.arange(n) % 3)


def _ids(images: torch.Tensor) -> set[int]:
    return set((images[:, 0, 0, 0].long() + 256 * images[:, 0, 0, 1].long()).tolist())


# --------------------------------------------------------------------------- digits


def test_digits_shapes_and_dtypes() -> None:
    ds = load_dataset("digits")
    assert isinstance(ds, Dataset)
    assert ds.name == "digits"
    assert ds.train_x.dtype == torch.uint8 and ds.val_x.dtype == torch.uint8
    assert ds.train_y.dtype == torch.int64 and ds.val_y.dtype == torch.int64
    assert ds.train_x.shape[1:] == (3, 8, 8)
    assert len(ds.train_x) + len(ds.val_x) == 1797
    assert len(ds.val_x) == round(1797 * 0.2)
    assert ds.num_classes == 10 and ds.hflip is False
    assert torch.equal(ds.train_x[:, 0], ds.train_x[:, 2])  # grayscale replicated
    assert int(ds.train_x.max()) == 255 and int(ds.train_x.min()) == 0
    assert set(ds.train_y.tolist()) == set(range(10))
    # statistics in [0, 1] units, equal to numpy's
    ref = ds.train_x.double() / 255.0
    assert ds.mean == pytest.approx(tuple(ref.mean(dim=(0, 2, 3)).tolist()))
    assert ds.std == pytest.approx(tuple(ref.std(dim=(0, 2, 3), unbiased=False).tolist()))


def test_digits_final_split_equals_search_split() -> None:
    a = load_dataset("digits", split="search")
    b = load_dataset("digits", split="final")
    assert torch.equal(a.val_y, b.val_y)
    assert b.val_is_test is False  # digits has no test split: "final" holds out as "search" does


def test_split_is_deterministic_disjoint_and_sized(tmp_path: Path) -> None:
    path = tmp_path / "ids.npz"
    _ids_npz(path, n=50)
    a = load_dataset("npz", data_dir=path, seed=3, val_fraction=0.3)
    b = load_dataset("npz", data_dir=path, seed=3, val_fraction=0.3)
    c = load_dataset("npz", data_dir=path, seed=4, val_fraction=0.3)
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.val_y, b.val_y)
    assert _ids(a.val_x) != _ids(c.val_x)
    assert len(a.val_x) == 15 and len(a.train_x) == 35
    assert _ids(a.train_x).isdisjoint(_ids(a.val_x))
    assert _ids(a.train_x) | _ids(a.val_x) == set(range(50))
    # labels travel with their images
    val_ids = a.val_x[:, 0, 0, 0].long() + 256 * a.val_x[:, 0, 0, 1].long()
    assert torch.equal(a.val_y, val_ids % 3)


# --------------------------------------------------------------------------- CIFAR


def test_cifar10_search_and_final(tmp_path: Path) -> None:
    batches = write_cifar10(tmp_path)
    search = load_dataset("cifar10", data_dir=tmp_path)
    assert search.train_x.shape == (16, 3, 32, 32) and search.val_x.shape == (4, 3, 32, 32)
    assert search.num_classes == 10 and search.hflip is True
    assert search.classes == ("airplane",) * 10  # from batches.meta
    final = load_dataset("cifar10", data_dir=tmp_path, split="final")
    assert final.train_x.shape == (20, 3, 32, 32)
    assert final.val_is_test is True and search.val_is_test is False
    test = batches["test_batch"]
    # the official row layout is 1024 red, 1024 green, 1024 blue values
    expected = torch.from_numpy(np.asarray(test[b"data"]).reshape(-1, 3, 32, 32))
    assert torch.equal(final.val_x, expected)
    assert final.val_y.tolist() == test[b"labels"]
    first = np.asarray(batches["data_batch_1"][b"data"]).reshape(-1, 3, 32, 32)
    assert torch.equal(final.train_x[:4], torch.from_numpy(first))


def test_cifar10_accepts_the_batches_folder_itself(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    ds = load_dataset("cifar10", data_dir=tmp_path / "cifar-10-batches-py", split="final")
    assert len(ds.train_x) == 20


def test_cifar100_fine_labels(tmp_path: Path) -> None:
    batches = write_cifar100(tmp_path)
    ds = load_dataset("cifar100", data_dir=tmp_path, split="final")
    assert ds.num_classes == 100
    assert ds.train_x.shape == (10, 3, 32, 32)
    assert ds.train_y.tolist() == batches["train"][b"fine_labels"]
    assert ds.val_y.tolist() == batches["test"][b"fine_labels"]


def test_cifar10_missing_folder(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError) as info:
        load_dataset("cifar10", data_dir=missing)
    assert str(info.value) == (
        f"cifar10: no data in {missing} (expected cifar-10-batches-py/data_batch_1; pass --download to fetch it)"
    )


def test_cifar10_corrupt_batch(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "data_batch_1").write_bytes(os.urandom(1000))
    with pytest.raises(DataError) as info:
        load_dataset("cifar10", data_dir=tmp_path)
    assert str(info.value) == f"cifar10: cannot read {folder / 'data_batch_1'}: not a CIFAR pickle batch"


def test_cifar10_truncated_batch(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(DataError, match="data_batch_3: not a CIFAR pickle batch"):
        load_dataset("cifar10", data_dir=tmp_path)


def test_cifar10_wrong_content_and_missing_batch(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    _write_pickle(folder / "data_batch_2", {b"data": np.zeros((2, 10), np.uint8), b"labels": [0, 1]})
    with pytest.raises(DataError, match="data_batch_2: not a CIFAR pickle batch"):
        load_dataset("cifar10", data_dir=tmp_path)
    (folder / "data_batch_2").unlink()
    with pytest.raises(DataError, match="missing .*data_batch_2"):
        load_dataset("cifar10", data_dir=tmp_path)


def test_cifar10_python2_module_names(tmp_path: Path) -> None:
    """The official files name numpy.core.multiarray (numpy 1.x); numpy 2 must still read them."""
    batches = write_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    blob = path.read_bytes()
    assert b"numpy._core.multiarray\n_reconstruct" in blob
    path.write_bytes(blob.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n"))
    ds = load_dataset("cifar10", data_dir=tmp_path, split="final")
    first = np.asarray(batches["data_batch_1"][b"data"]).reshape(-1, 3, 32, 32)
    assert torch.equal(ds.train_x[:4], torch.from_numpy(first))


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("touch pwned",))


def test_cifar_pickle_cannot_run_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    _write_pickle(folder / "data_batch_1", {b"data": _Evil(), b"labels": []})
    with pytest.raises(DataError, match="not a CIFAR pickle batch"):
        load_dataset("cifar10", data_dir=tmp_path)
    assert not (tmp_path / "pwned").exists()


def test_cifar10_download_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(data_mod.urllib.request, "urlopen", offline)
    with pytest.raises(DataError) as info:
        load_dataset("cifar10", data_dir=tmp_path, download=True)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("cifar10: cannot download https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz")
    assert not list(tmp_path.glob("*.part"))


def _fake_cifar_tarball(tmp_path: Path) -> bytes:
    src = tmp_path / "src"
    write_cifar10(src)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(src / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    return buffer.getvalue()


def test_cifar10_download_verifies_and_extracts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blob = _fake_cifar_tarball(tmp_path)
    served: list[str] = []

    def urlopen(url: str, timeout: float) -> io.BytesIO:
        served.append(url)
        return io.BytesIO(blob)

    monkeypatch.setattr(data_mod.urllib.request, "urlopen", urlopen)
    spec = dict(data_mod._CIFAR["cifar10"], md5=hashlib.md5(blob).hexdigest())
    monkeypatch.setitem(data_mod._CIFAR, "cifar10", spec)
    root = tmp_path / "data"
    ds = load_dataset("cifar10", data_dir=root, download=True, split="final")
    assert len(ds.train_x) == 20 and len(ds.val_x) == 6
    assert served == ["https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"]
    # a second load uses the extracted files
    load_dataset("cifar10", data_dir=root, download=True)
    assert len(served) == 1


def test_cifar10_download_md5_mismatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blob = _fake_cifar_tarball(tmp_path)  # not the official archive: its md5 differs
    monkeypatch.setattr(data_mod.urllib.request, "urlopen", lambda url, timeout: io.BytesIO(blob))
    with pytest.raises(DataError, match="md5 mismatch"):
        load_dataset("cifar10", data_dir=tmp_path / "data", download=True)
    assert not (tmp_path / "data" / "cifar-10-python.tar.gz").exists()


# --------------------------------------------------------------------------- MNIST


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx(tmp_path: Path, gz: bool) -> None:
    arrays = write_mnist(tmp_path, gz=gz)
    ds = load_dataset("mnist", data_dir=tmp_path, split="final")
    assert ds.train_x.shape == (12, 3, 28, 28) and ds.val_x.shape == (5, 3, 28, 28)
    assert ds.hflip is False and ds.num_classes == 10
    assert torch.equal(ds.train_x[:, 1], torch.from_numpy(arrays["train-images-idx3-ubyte"]))
    assert ds.val_y.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    search = load_dataset("mnist", data_dir=tmp_path)
    assert len(search.train_x) + len(search.val_x) == 12


def test_fashion_mnist_in_named_subfolder(tmp_path: Path) -> None:
    write_mnist(tmp_path / "fashion_mnist", gz=True)
    ds = load_dataset("fashion_mnist", data_dir=tmp_path)
    assert ds.hflip is True and ds.train_x.shape[1:] == (3, 28, 28)


def test_mnist_bad_magic(tmp_path: Path) -> None:
    write_mnist(tmp_path, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    blob = bytearray(path.read_bytes())
    blob[:4] = (1234).to_bytes(4, "big")
    path.write_bytes(bytes(blob))
    with pytest.raises(DataError) as info:
        load_dataset("mnist", data_dir=tmp_path)
    assert str(info.value) == f"mnist: cannot read {path}: bad idx magic number 1234 (expected 2051)"


def test_mnist_truncated_and_missing(tmp_path: Path) -> None:
    write_mnist(tmp_path, gz=False)
    path = tmp_path / "train-labels-idx1-ubyte"
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(DataError, match="train-labels-idx1-ubyte: 9 data bytes, header says 12"):
        load_dataset("mnist", data_dir=tmp_path)
    with pytest.raises(DataError, match=r"mnist: no data in .* \(expected train-images-idx3-ubyte\[.gz\]"):
        load_dataset("mnist", data_dir=tmp_path / "empty")


# --------------------------------------------------------------------------- image folders


def test_imagefolder(tmp_path: Path) -> None:
    write_imagefolder(tmp_path)
    ds = load_dataset("imagefolder", data_dir=tmp_path, resolution=8, split="final")
    assert ds.train_x.shape == (7, 3, 8, 8) and ds.val_x.shape == (4, 3, 8, 8)
    assert ds.num_classes == 2 and ds.hflip is True
    assert ds.train_y.tolist() == [0, 0, 0, 0, 1, 1, 1]  # cat (4 with the jpeg), dog
    red = ds.train_x[ds.train_y == 0][:3]
    assert (red[:, 0] == 255).all() and (red[:, 2] == 0).all()
    gray = ds.train_x[3]
    assert torch.equal(gray[0], gray[1]) and abs(int(gray[0, 0, 0]) - 128) <= 1
    assert (ds.val_x[ds.val_y == 1][:, 2] == 255).all()


def test_imagefolder_without_train_subfolder(tmp_path: Path) -> None:
    write_imagefolder(tmp_path, with_val=False)
    ds = load_dataset("imagefolder", data_dir=tmp_path / "train", resolution=6)
    assert len(ds.train_x) + len(ds.val_x) == 7 and ds.train_x.shape[2:] == (6, 6)


def test_imagefolder_errors(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(DataError) as info:
        load_dataset("imagefolder", data_dir=missing)
    assert str(info.value) == (
        f"imagefolder: {missing} is no folder (expected a folder with train/<class>/*.jpg or <class>/*.jpg)"
    )
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no class folders"):
        load_dataset("imagefolder", data_dir=tmp_path / "empty")
    bad = tmp_path / "bad"
    (bad / "cls").mkdir(parents=True)
    (bad / "cls" / "broken.png").write_bytes(b"not a png at all")
    (bad / "other").mkdir()
    Image.new("RGB", (8, 8)).save(bad / "other" / "0.png")
    with pytest.raises(DataError, match=r"imagefolder: cannot read .*broken\.png: cannot identify image file"):
        load_dataset("imagefolder", data_dir=bad)


def test_imagefolder_with_one_class_is_refused(tmp_path: Path) -> None:
    (tmp_path / "one" / "cat").mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (8, 8), (i * 10, 0, 0)).save(tmp_path / "one" / "cat" / f"{i}.png")
    with pytest.raises(DataError) as info:
        load_dataset("imagefolder", data_dir=tmp_path / "one")
    assert str(info.value) == f"imagefolder: {tmp_path / 'one'} has 1 class folder ('cat'); needs at least 2 classes"


# --------------------------------------------------------------------------- npz and synthetic


@pytest.mark.parametrize("layout", ["NHW", "NHWC", "NCHW", "NHW1"])
def test_npz_layouts(tmp_path: Path, layout: str) -> None:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, size=(10, 3, 5, 6), dtype=np.uint8)
    x = {
        "NHW": base[:, 0],
        "NHWC": base.transpose(0, 2, 3, 1),
        "NCHW": base,
        "NHW1": base[:, :1].transpose(0, 2, 3, 1),
    }[layout]
    path = tmp_path / "d.npz"
    np.savez(path, x=x, y=np.arange(10) % 4, x_test=x[:3], y_test=np.array([0, 1, 3]))
    ds = load_dataset("npz", data_dir=path, split="final")
    expected = base if layout in ("NHWC", "NCHW") else np.repeat(base[:, :1], 3, axis=1)
    assert torch.equal(ds.train_x, torch.from_numpy(expected))
    assert ds.num_classes == 4 and ds.val_y.tolist() == [0, 1, 3]


def test_npz_missing_keys(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros((4, 3, 3), np.uint8), labels=np.zeros(4, np.int64))
    with pytest.raises(DataError) as info:
        load_dataset("npz", data_dir=path)
    assert str(info.value) == f"npz: {path} has no array 'y' (found labels, x)"
    np.savez(path, x=np.zeros((4, 3, 3), np.uint8), y=np.arange(4), x_test=np.zeros((2, 3, 3), np.uint8))
    with pytest.raises(DataError, match="has no array 'y_test'"):
        load_dataset("npz", data_dir=path)


def test_npz_stray_label_is_refused(tmp_path: Path) -> None:
    """One label 1,000,000 among 0..2 must not build a 1,000,001-class network."""
    path = tmp_path / "stray.npz"
    y = np.arange(60) % 3
    y[5] = 1_000_000
    np.savez(path, x=np.zeros((60, 8, 8, 3), np.uint8), y=y)
    with pytest.raises(DataError) as info:
        load_dataset("npz", data_dir=path)
    assert str(info.value) == (
        f"npz: y in {path}: label 1,000,000 is far beyond the other labels (4 distinct among 60 images);"
        " labels must number the classes 0..K-1"
    )
    # gaps that a subset of a labelled set leaves are fine: labels 0, 2, 5 make 6 classes
    np.savez(path, x=np.zeros((6, 8, 8), np.uint8), y=np.array([0, 2, 5, 0, 2, 5]))
    assert load_dataset("npz", data_dir=path).num_classes == 6
    # more classes than images is a stray too
    np.savez(path, x=np.zeros((3, 8, 8), np.uint8), y=np.array([0, 1, 9]))
    with pytest.raises(DataError, match="label 9 is far beyond"):
        load_dataset("npz", data_dir=path)


def test_npz_empty_nan_single_class_and_folder(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros((0, 8, 8), np.uint8), y=np.zeros(0, np.int64))
    with pytest.raises(DataError) as info:
        load_dataset("npz", data_dir=path)
    assert str(info.value) == f"npz: x in {path} has no images (shape (0, 8, 8))"
    x = np.full((4, 8, 8), 0.5, np.float32)
    x[1, 2, 3] = np.nan
    np.savez(path, x=x, y=np.arange(4) % 2)
    with pytest.raises(DataError) as info:
        load_dataset("npz", data_dir=path)
    assert str(info.value) == f"npz: x in {path} contains NaN (expected uint8 0..255 or floats in [0, 1])"
    np.savez(path, x=np.zeros((4, 8, 8), np.uint8), y=np.zeros(4, np.int64))
    with pytest.raises(DataError) as info:
        load_dataset("npz", data_dir=path)
    assert str(info.value) == f"npz: y in {path}: labels of a single class (a classifier needs at least 2 classes)"
    with pytest.raises(DataError) as info:
        load_dataset("npz", data_dir=tmp_path)
    assert str(info.value) == f"npz: {tmp_path} is a folder (expected an .npz file with arrays x and y)"


def test_npz_class_names_must_cover_the_labels(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros((6, 8, 8), np.uint8), y=np.arange(6) % 3, classes=np.array(["a", "b"]))
    with pytest.raises(DataError) as info:
        load_dataset("npz", data_dir=path)
    assert str(info.value) == f"npz: classes in {path} names 2 classes, but the labels go up to 2"
    np.savez(path, x=np.zeros((6, 8, 8), np.uint8), y=np.arange(6) % 3, classes=np.array(["a", "b", "c", "d"]))
    ds = load_dataset("npz", data_dir=path)
    assert ds.num_classes == 4 and ds.classes == ("a", "b", "c", "d")


def test_npz_bad_content(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros((4, 3, 3), np.uint8), y=np.arange(3))
    with pytest.raises(DataError, match="3 labels for 4 images"):
        load_dataset("npz", data_dir=path)
    np.savez(path, x=np.full((4, 3, 3), 300, np.int32), y=np.arange(4))
    with pytest.raises(DataError, match="dtype int32"):
        load_dataset("npz", data_dir=path)
    path.write_bytes(b"garbage")
    with pytest.raises(DataError, match=f"npz: cannot read {path}"):
        load_dataset("npz", data_dir=path)
    with pytest.raises(DataError, match="npz: pass --data-dir"):
        load_dataset("npz")


def test_synthetic() -> None:
    ds = load_dataset("synthetic", resolution=12, num_classes=5, size=100, seed=1)
    assert ds.train_x.shape == (80, 3, 12, 12) and ds.val_x.shape == (20, 3, 12, 12)
    assert ds.num_classes == 5 and int(ds.train_y.max()) < 5
    again = load_dataset("synthetic", resolution=12, num_classes=5, size=100, seed=1)
    assert torch.equal(ds.train_x, again.train_x)
    assert load_dataset("synthetic").train_x.shape[2:] == (32, 32)


# --------------------------------------------------------------------------- arguments


def test_unknown_dataset() -> None:
    with pytest.raises(DataError) as info:
        load_dataset("foo")
    assert str(info.value) == f"unknown dataset 'foo' (choose from {', '.join(DATASETS)})"
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"split": "test"}, "unknown split 'test'"),
        ({"val_fraction": 0.0}, "val_fraction must lie in (0, 1), got 0.0"),
        ({"val_fraction": 1.5}, "got 1.5"),
        ({"resolution": 0}, "resolution must be a positive int, got 0"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], needle: str) -> None:
    with pytest.raises(DataError) as info:
        load_dataset("digits", **kwargs)  # type: ignore[arg-type]
    assert needle in str(info.value)


def test_synthetic_bad_arguments() -> None:
    with pytest.raises(DataError, match="num_classes must be >= 2, got 1"):
        load_dataset("synthetic", num_classes=1)
    with pytest.raises(DataError, match="size must be >= 2, got 0"):
        load_dataset("synthetic", size=0)
