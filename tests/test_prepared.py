"""Prepared data: prepare -> manifest + .npy, resume, bad folders, subsets, and training from the maps.

Everything is generated here (image folders, .npz files, CIFAR batches): no downloads.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from nas.data import DataError, load_dataset, open_prepared, prepare, read_manifest, verify_prepared
from nas.data import writer
from nas.data.feed import _Resident, _Streamed
from nas.train import ProxyConfig, _Run, train

from conftest import TINY_ARCH
from test_data import write_cifar10, write_mnist
from test_train import tiny_net

CLASSES = ("ant", "bee", "cat")
CPU = torch.device("cpu")


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_folder(root: Path, *, per_class: int = 8, val: int = 0, size: int = 8, seed: int = 0) -> dict[str, np.ndarray]:
    """``train/<class>/NNN.png`` (+ ``val/``) of random pixels; returns each file's pixels (3, H, W) by path."""
    rng = np.random.default_rng(seed)
    pixels = {}
    for split, count in (("train", per_class), ("val", val)):
        for name in CLASSES:
            for i in range(count):
                rel = f"{split}/{name}/{i:03d}.png"
                image = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(image).save(root / rel)
                pixels[rel] = image.transpose(2, 0, 1)
    return pixels


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _rows(x: np.ndarray) -> list[bytes]:
    return [row.tobytes() for row in np.asarray(x)]


# --------------------------------------------------------------------------- round trips


def test_imagefolder_round_trip(tmp_path: Path) -> None:
    pixels = write_folder(tmp_path / "src", per_class=8, val=2)
    result = prepare(tmp_path / "src", tmp_path / "out", resolution=8, val_size=5, seed=3, workers=1)
    assert result.path == tmp_path / "out" and result.decoded == 30 and result.resumed_from == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "manifest.json", "minival_x.npy", "minival_y.npy", "test_x.npy", "test_y.npy", "train_x.npy", "train_y.npy"]
    assert not (tmp_path / "out.partial").exists()

    manifest = read_manifest(tmp_path / "out")
    assert manifest.classes == CLASSES and manifest.resolution == 8 and manifest.hflip is True
    assert dict(manifest.images) == {"minival": 5, "train": 19, "test": 6}
    assert manifest.minival_seed == 3 and manifest.skipped == () and manifest.source_format == "imagefolder"
    for name, entry in manifest.files.items():
        assert entry["sha256"] == _sha256(tmp_path / "out" / name)
    assert manifest.files["train_x.npy"]["shape"] == [19, 3, 8, 8]

    # the minival: the first 5 of the seeded permutation of the training images (source order)
    train_paths = [p for p in pixels if p.startswith("train/")]
    perm = np.random.default_rng(3).permutation(len(train_paths))
    minival = [train_paths[i] for i in perm[:5]]
    rest = [p for i, p in enumerate(train_paths) if i not in set(perm[:5].tolist())]
    ds = load_dataset("prepared", data_dir=tmp_path / "out")
    assert ds.name == "prepared" and ds.num_classes == 3 and ds.classes == CLASSES
    assert _rows(ds.val.x) == [pixels[p].tobytes() for p in minival]
    assert ds.val.y.tolist() == [CLASSES.index(p.split("/")[1]) for p in minival]
    assert _rows(ds.train.x) == [pixels[p].tobytes() for p in rest]
    assert ds.train.y.tolist() == [CLASSES.index(p.split("/")[1]) for p in rest]
    # statistics of the training images, as for in-memory sets
    ref = np.stack([pixels[p] for p in rest]).astype(np.float64) / 255.0
    assert ds.mean == pytest.approx(tuple(ref.mean(axis=(0, 2, 3))))
    assert ds.std == pytest.approx(tuple(ref.std(axis=(0, 2, 3))))

    # "final": train + minival as two mapped parts, validated on the test split
    final = load_dataset("prepared", data_dir=tmp_path / "out", split="final")
    assert len(final.train) == 24 and len(final.train.parts) == 2
    assert final.val_is_test is True and ds.val_is_test is False
    assert _rows(final.val.x) == [pixels[p].tobytes() for p in pixels if p.startswith("val/")]
    x, y = torch.empty((3, 3, 8, 8), dtype=torch.uint8), torch.empty(3, dtype=torch.int64)
    final.train.gather(torch.tensor([20, 0, 19]), x, y)  # rows from minival, train, minival
    assert [row.numpy().tobytes() for row in x] == [pixels[minival[1]].tobytes(), pixels[rest[0]].tobytes(),
                                                    pixels[minival[0]].tobytes()]


def test_minival_is_fixed_by_its_seed(tmp_path: Path) -> None:
    write_folder(tmp_path / "src", per_class=10)
    minivals = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        prepare(tmp_path / "src", tmp_path / name, resolution=8, val_size=6, seed=seed, workers=1)
        minivals[name] = _rows(open_prepared(tmp_path / name).val.x)
    assert minivals["a"] == minivals["b"] != minivals["c"]
    assert _sha256(tmp_path / "a" / "train_x.npy") == _sha256(tmp_path / "b" / "train_x.npy")


def test_default_minival_size() -> None:
    assert writer.default_val_size(180) == 18
    assert writer.default_val_size(5) == 1
    assert writer.default_val_size(1_281_167) == 25_000


def test_two_workers_write_the_same_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_folder(tmp_path / "src", per_class=30, size=12)
    (tmp_path / "src" / "train" / "bee" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    monkeypatch.setattr(writer._FolderSource, "chunk", 4)  # enough tasks for the worker pool
    for name, workers in (("one", 1), ("two", 2)):
        prepare(tmp_path / "src", tmp_path / name, resolution=8, val_size=10, workers=workers)
    for name in ("train_x.npy", "minival_x.npy", "train_y.npy"):
        assert _sha256(tmp_path / "one" / name) == _sha256(tmp_path / "two" / name)
    assert read_manifest(tmp_path / "two").skipped == ("train/bee/broken.jpg",)


def test_npz_source_mapped_and_resized(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(50, 16, 12, 3), dtype=np.uint8)  # NHWC, not square
    y = np.arange(50) % 4
    np.savez(tmp_path / "d.npz", x=x, y=y, x_test=x[:7], y_test=y[:7])
    prepare(tmp_path / "d.npz", tmp_path / "out", resolution=8, val_size=10)
    manifest = read_manifest(tmp_path / "out")
    assert manifest.source_format == "npz" and manifest.classes == ("0", "1", "2", "3")
    assert dict(manifest.images) == {"minival": 10, "train": 40, "test": 7}
    ds = open_prepared(tmp_path / "out", split="final")
    # shorter side (12) to 8, then the centre crop, as for an image folder
    expected = np.stack([np.asarray(Image.fromarray(img).resize((8, 11), Image.Resampling.BILINEAR, reducing_gap=3.0)
                                    .crop((0, 1, 8, 9))).transpose(2, 0, 1) for img in x[:7]])
    assert np.array_equal(ds.val.x, expected)
    assert ds.val.y.tolist() == y[:7].tolist()


def test_cifar_folder_source(tmp_path: Path) -> None:
    batches = write_cifar10(tmp_path / "cifar")
    prepare(tmp_path / "cifar", tmp_path / "out", resolution=32, val_size=4)
    manifest = read_manifest(tmp_path / "out")
    assert manifest.source_format == "cifar10" and manifest.classes == ("airplane",) * 10
    ds = open_prepared(tmp_path / "out", split="final")
    test = np.asarray(batches["test_batch"][b"data"]).reshape(-1, 3, 32, 32)
    assert np.array_equal(ds.val.x, test) and ds.val.y.tolist() == batches["test_batch"][b"labels"]
    assert len(ds.train) == 20


def test_fashion_mnist_folder_source(tmp_path: Path) -> None:
    arrays = write_mnist(tmp_path / "fashion_mnist", gz=True)
    prepare(tmp_path, tmp_path / "out", resolution=28, val_size=2)
    manifest = read_manifest(tmp_path / "out")
    assert manifest.source_format == "fashion_mnist" and manifest.hflip is True
    assert manifest.classes[:2] == ("T-shirt/top", "Trouser") and dict(manifest.images) == {
        "minival": 2, "train": 10, "test": 5}
    ds = open_prepared(tmp_path / "out", split="final")
    assert np.array_equal(ds.val.x[:, 0], arrays["t10k-images-idx3-ubyte"])  # grayscale replicated
    assert np.array_equal(ds.val.x[:, 2], arrays["t10k-images-idx3-ubyte"])


def test_evaluate_and_train_read_a_prepared_folder(tmp_path: Path, stored16: Path, nas_cli) -> None:
    """The command line's readers: nas evaluate (search split) and nas train (final split)."""
    common = ("--dataset", "prepared", "--data-dir", str(stored16), "--epochs", "1", "--resolution", "16",
              "--batch", "32", "--json")
    evaluated = json.loads(nas_cli("evaluate", TINY_ARCH, *common, check=True).stdout)
    assert evaluated["state"] == "COMPLETE" and 0.0 <= evaluated["accuracy"] <= 1.0
    trained = json.loads(nas_cli("train", TINY_ARCH, *common, check=True).stdout)
    assert trained["split"] == "final" and trained["dataset"] == "prepared" and 0.0 <= trained["accuracy"] <= 1.0


# --------------------------------------------------------------------------- subsets, skipping


def test_class_subsets_and_images_per_class(tmp_path: Path) -> None:
    pixels = write_folder(tmp_path / "src", per_class=6, val=2)
    prepare(tmp_path / "src", tmp_path / "two", resolution=8, classes=2, val_size=2, workers=1)
    two = read_manifest(tmp_path / "two")
    assert two.classes == ("ant", "bee") and dict(two.images) == {"train": 10, "minival": 2, "test": 4}
    assert two.options["classes"] == 2

    prepare(tmp_path / "src", tmp_path / "named", resolution=8, classes=["cat", "ant"], images_per_class=4,
            val_size=2, workers=1)
    named = read_manifest(tmp_path / "named")
    assert named.classes == ("ant", "cat")  # labels keep the source's order
    ds = open_prepared(tmp_path / "named")
    kept = [pixels[f"train/{c}/{i:03d}.png"].tobytes() for c in ("ant", "cat") for i in range(4)]
    assert sorted(_rows(ds.train.x) + _rows(ds.val.x)) == sorted(kept)
    assert sorted(ds.train.y.tolist() + ds.val.y.tolist()) == [0] * 4 + [1] * 4

    with pytest.raises(DataError) as info:
        prepare(tmp_path / "src", tmp_path / "bad", resolution=8, classes=["ant", "dog"])
    assert str(info.value) == "prepare: class 'dog' is not in the source (its classes: ant, bee, cat)"
    with pytest.raises(DataError, match=r"^prepare: classes 1 \(a classifier needs at least 2 classes\)$"):
        prepare(tmp_path / "src", tmp_path / "bad", resolution=8, classes=1)
    with pytest.raises(DataError, match=r"^prepare: val_size 18 leaves no training images \(18 in "):
        prepare(tmp_path / "src", tmp_path / "bad", resolution=8, val_size=18)


def test_classes_without_test_images_leave_no_test_split(tmp_path: Path) -> None:
    write_folder(tmp_path / "src", per_class=4)
    (tmp_path / "src" / "val" / "ant").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "src" / "val" / "ant" / "0.png")
    prepare(tmp_path / "src", tmp_path / "out", resolution=8, classes=["bee", "cat"], val_size=2, workers=1)
    assert dict(read_manifest(tmp_path / "out").images) == {"minival": 2, "train": 6}


def test_unreadable_images_are_skipped_and_listed(tmp_path: Path, nas_cli) -> None:
    write_folder(tmp_path / "src", per_class=5)
    (tmp_path / "src" / "train" / "bee" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (tmp_path / "src" / "train" / "cat" / "empty.png").write_bytes(b"")
    proc = nas_cli("data", "prepare", str(tmp_path / "src"), str(tmp_path / "out"), "--resolution", "8",
                   "--val-size", "3", "--workers", "2")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == f"{tmp_path / 'out'}: 12 train, 3 minival images, 3 classes, 8x8"
    assert "skipped 2 unreadable images: train/bee/broken.jpg, train/cat/empty.png" in lines
    manifest = read_manifest(tmp_path / "out")
    assert manifest.skipped == ("train/bee/broken.jpg", "train/cat/empty.png")
    assert dict(manifest.images) == {"train": 12, "minival": 3}
    assert "prepare: train " in proc.stderr  # plain progress lines when stderr is not a terminal


def test_minival_replaces_an_unreadable_image(tmp_path: Path) -> None:
    write_folder(tmp_path / "src", per_class=4)
    train_paths = sorted(str(p.relative_to(tmp_path / "src")) for p in (tmp_path / "src").rglob("*.png"))
    first = train_paths[int(np.random.default_rng(0).permutation(12)[0])]
    (tmp_path / "src" / first).write_bytes(b"broken")
    prepare(tmp_path / "src", tmp_path / "out", resolution=8, val_size=4, workers=1)
    manifest = read_manifest(tmp_path / "out")
    assert manifest.skipped == (first,) and dict(manifest.images) == {"minival": 4, "train": 7}


# --------------------------------------------------------------------------- resume


class _Stop(Exception):
    pass


def test_interrupted_prepare_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_folder(tmp_path / "src", per_class=12, val=2)
    monkeypatch.setattr(writer._FolderSource, "chunk", 4)
    prepare(tmp_path / "src", tmp_path / "whole", resolution=8, val_size=5, workers=1)

    calls = []

    def stop_in_train(stage: str, done: int, total: int) -> None:
        calls.append((stage, done, total))
        if stage == "train" and done >= 12:
            raise _Stop()

    with pytest.raises(_Stop):
        prepare(tmp_path / "src", tmp_path / "out", resolution=8, val_size=5, workers=1, progress=stop_in_train)
    assert calls[:3] == [("minival", 4, 5), ("minival", 5, 5), ("train", 4, 31)]
    assert not (tmp_path / "out").exists()
    state = json.loads((tmp_path / "out.partial" / "progress.json").read_text())
    assert state["splits"]["train"] == {"consumed": 12, "written": 12}
    with pytest.raises(DataError) as info:
        open_prepared(tmp_path / "out")
    assert str(info.value) == (f"prepared: no folder {tmp_path / 'out'} "
                               f"(prepare one with: nas data prepare SRC {tmp_path / 'out'} --resolution R)")
    # rows written after the last save (a kill between saves) are not trusted
    with (tmp_path / "out.partial" / "train_x.npy").open("ab") as f:
        f.write(b"\x07" * 1000)

    result = prepare(tmp_path / "src", tmp_path / "out", resolution=8, val_size=5, workers=1)
    assert result.resumed_from == 5 + 12 and result.decoded == 31 + 6 - 12
    for name in ("train_x.npy", "train_y.npy", "minival_x.npy", "test_x.npy"):
        assert _sha256(tmp_path / "out" / name) == _sha256(tmp_path / "whole" / name), name
    assert read_manifest(tmp_path / "out").files == read_manifest(tmp_path / "whole").files
    assert not (tmp_path / "out.partial").exists()

    again = prepare(tmp_path / "src", tmp_path / "out", resolution=8, val_size=5, workers=1)
    assert again.decoded == 0 and again.resumed_from == 0
    with pytest.raises(DataError, match="already holds a prepared set"):
        prepare(tmp_path / "src", tmp_path / "out", resolution=8, val_size=6, workers=1)


def test_prepare_to_an_npz_explains_the_folder(tmp_path: Path) -> None:
    write_folder(tmp_path / "src", per_class=3)
    with pytest.raises(DataError) as info:
        prepare(tmp_path / "src", tmp_path / "small.npz", resolution=8)
    assert str(info.value) == (f"prepare: {tmp_path / 'small.npz'} ends in .npz, but a prepared set is a folder "
                               "(manifest.json + .npy arrays); name a folder and train with --dataset prepared "
                               "--data-dir FOLDER")


def test_prepare_refuses_a_foreign_folder(tmp_path: Path) -> None:
    write_folder(tmp_path / "src", per_class=3)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(DataError) as info:
        prepare(tmp_path / "src", tmp_path / "out", resolution=8)
    assert str(info.value) == f"prepare: {tmp_path / 'out'} already exists and is not a prepared folder; choose a new folder"
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine"


# --------------------------------------------------------------------------- bad folders


@pytest.fixture
def good(tmp_path: Path) -> Path:
    write_folder(tmp_path / "src", per_class=6)
    prepare(tmp_path / "src", tmp_path / "good", resolution=8, val_size=3, workers=1)
    return tmp_path / "good"


def _error(folder: Path) -> str:
    with pytest.raises(DataError) as info:
        load_dataset("prepared", data_dir=folder)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_truncated_array(good: Path) -> None:
    path = good / "train_x.npy"
    size = path.stat().st_size
    with path.open("r+b") as f:
        f.truncate(1000)
    assert _error(good) == f"prepared: {path} is truncated (1,000 bytes, expected {size:,}); prepare it again"


def test_missing_file_and_manifest(good: Path) -> None:
    (good / "minival_y.npy").unlink()
    assert _error(good) == f"prepared: missing {good / 'minival_y.npy'} (listed in {good / 'manifest.json'})"
    (good / "manifest.json").unlink()
    assert _error(good) == f"prepared: no manifest.json in {good} (not a folder written by nas data prepare)"


def test_manifest_that_disagrees_with_its_arrays(good: Path) -> None:
    manifest = json.loads((good / "manifest.json").read_text())
    manifest["files"]["train_x.npy"]["shape"] = [15, 3, 16, 16]
    (good / "manifest.json").write_text(json.dumps(manifest))
    assert _error(good) == (f"prepared: {good / 'train_x.npy'} holds [15, 3, 8, 8] uint8, "
                            "but manifest.json says [15, 3, 16, 16] uint8")
    manifest["images"]["train"] = 14
    (good / "manifest.json").write_text(json.dumps(manifest))
    assert _error(good) == (f"prepared: {good / 'manifest.json'}: train_x.npy has shape [15, 3, 16, 16] "
                            "but images['train'] is 14")


def test_label_outside_the_classes(good: Path) -> None:
    labels = np.load(good / "train_y.npy", mmap_mode="r+")
    labels[4] = 7
    labels.flush()
    del labels
    assert _error(good) == f"prepared: {good / 'train_y.npy'} has label 7, but manifest.json lists 3 classes"


def test_manifest_not_json_or_binary(good: Path) -> None:
    (good / "manifest.json").write_text("{not json")
    assert _error(good) == f"prepared: {good / 'manifest.json'} is not valid JSON (line 1: Expecting property name " \
                           "enclosed in double quotes)"
    (good / "manifest.json").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    assert _error(good) == f"prepared: {good / 'manifest.json'} is not a text file (binary or not UTF-8)"
    assert _error(good / "train_x.npy") == (f"prepared: {good / 'train_x.npy'} is a file "
                                            "(expected the folder nas data prepare wrote)")


def test_verify_finds_a_changed_byte(good: Path) -> None:
    assert verify_prepared(good) == ()
    path = good / "minival_x.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    assert verify_prepared(good) == (f"prepared: {path} does not match its checksum in manifest.json",)


def test_class_list_file_errors(tmp_path: Path) -> None:
    (tmp_path / "bin").write_bytes(bytes(range(256)))
    with pytest.raises(DataError) as info:
        writer.read_class_list(tmp_path / "bin")
    assert str(info.value) == f"classes: {tmp_path / 'bin'} is not a text file (binary or not UTF-8)"
    (tmp_path / "list.txt").write_text("# two of them\nbee\n\ncat\n")
    assert writer.read_class_list(tmp_path / "list.txt") == ("bee", "cat")


# --------------------------------------------------------------------------- training from the maps


@pytest.fixture(scope="module")
def stored16(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 images at 16 px (3 classes, a test split): the proxy resizes them per batch or once."""
    root = tmp_path_factory.mktemp("stored16")
    rng = np.random.default_rng(1)
    y = np.arange(360) % 3
    x = rng.integers(0, 120, size=(360, 3, 16, 16), dtype=np.uint8)
    x[np.arange(360), y] += 120  # the class is the brightest channel: learnable in a few steps
    np.savez(root / "d.npz", x=x[:300], y=y[:300], x_test=x[300:], y_test=y[300:])
    prepare(root / "d.npz", root / "out", resolution=16, val_size=60)
    return root / "out"


def _one_epoch(data, on_device: bool) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    config = ProxyConfig(resolution=8, batch_size=32, data_on_device=on_device, seed=5)
    run = _Run(tiny_net(3), data, config, CPU)
    assert isinstance(run.feed, _Resident if on_device else _Streamed)
    order = torch.randperm(len(data.train), generator=run.order_generator)
    batches = []
    with contextlib.closing(run.feed.train_batches(order, run.batch)) as feed:
        for source, idx, y in feed:
            batches += [run.augmented_batch(source, idx).clone(), y.clone()]
    evals = [t.clone() for x, y in run.feed.eval_batches(run.eval_batch) for t in (x, y)]
    run.release()
    return batches, evals


@pytest.mark.parametrize("split", ["search", "final"])
def test_mapped_and_resident_give_the_same_batches(stored16: Path, split: str) -> None:
    data = load_dataset("prepared", data_dir=stored16, split=split)
    resident, streamed = _one_epoch(data, True), _one_epoch(data, False)
    assert len(resident[0]) == 2 * (len(data.train) // 32) and len(resident[1]) == 2
    for a, b in zip(resident[0] + resident[1], streamed[0] + streamed[1]):
        assert torch.equal(a, b)


def test_mapped_and_resident_train_alike(stored16: Path) -> None:
    data = load_dataset("prepared", data_dir=stored16)
    results, weights = [], []
    for on_device in (True, False):
        torch.manual_seed(0)
        model = tiny_net(3)
        config = ProxyConfig(epochs=3, resolution=8, batch_size=32, data_on_device=on_device)
        results.append(train(model, data, config).epoch_accuracies)
        weights.append(model.state_dict())
    assert results[0] == results[1] and results[0][-1] > 0.9
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    # on a CPU "auto" streams a memory-mapped set instead of copying it
    assert isinstance(_Run(tiny_net(3), data, ProxyConfig(), CPU).feed, _Streamed)


def _rss_anon() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no RssAnon in /proc/self/status")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_arrays_are_mapped_read_only_not_copied(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.uint8, shape=(24_576, 3, 32, 32))
    for start in range(0, len(x), 4096):
        x[start:start + 4096] = rng.integers(0, 256, size=(4096, 3, 32, 32), dtype=np.uint8)
    np.savez(tmp_path / "big.npz", x=x, y=np.arange(len(x)) % 10)
    del x
    prepare(tmp_path / "big.npz", tmp_path / "big", resolution=32, val_size=2048)
    (tmp_path / "x.npy").unlink()
    (tmp_path / "big.npz").unlink()
    size = (tmp_path / "big" / "train_x.npy").stat().st_size  # 69 MB

    data = load_dataset("prepared", data_dir=tmp_path / "big", split="final")
    for array, _ in data.train.parts + data.val.parts:
        assert isinstance(array, np.memmap) and not array.flags.writeable
    assert Path(data.train.parts[0][0].filename) == tmp_path / "big" / "train_x.npy"

    model = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 10))  # the data path dominates
    # a small batch keeps a step's own buffers (crop indices, float images) far below the set
    config = ProxyConfig(epochs=1, resolution=32, batch_size=64)
    small = load_dataset("synthetic", resolution=32, size=600)
    train(model, small, config)  # torch's one-time allocations, before measuring
    peak, before, done = [0], _rss_anon(), threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_anon())
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        train(model, data, config)
    finally:
        done.set()
        sampler.join()
    grown = max(peak[0], _rss_anon()) - before
    assert grown < 0.25 * size, f"RssAnon grew by {grown / 1e6:.1f} MB while training on a {size / 1e6:.0f} MB map"
