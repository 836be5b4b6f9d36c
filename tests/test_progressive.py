"""Progressive learning: the schedule's numbers, the batched augmentations, ``nas train --progressive``."""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from nas.augment import RAND_AUGMENT_OPS, mixup, rand_augment
from nas.augment import _TRANSLATE_X, _TRANSLATE_Y, _color, _geometric, _posterize, _solarize
from nas.progressive import Progressive, Stage, default_start_resolution

from conftest import run_nas

TINY = "stem_k3_s1_c8 fmb_r1_k3_s2_e1_c8 mb_r1_k3_s2_e2_c16_se0.25 head_c32"


# --------------------------------------------------------------------------- the schedule


def test_default_schedule_is_efficientnetv2_s() -> None:
    plan = Progressive().plan(6, 32)
    # 4 stages over 6 epochs, split as the official code splits them (stage i ends after
    # epoch floor((i + 1) * 6 / 4): 1, 3, 4, 6); sizes 16 + 16 * i / 3, rounded
    assert [s.index for s in plan] == [0, 1, 1, 2, 3, 3]
    assert [s.resolution for s in plan] == [16, 21, 21, 27, 32, 32]
    assert {s.stages for s in plan} == {4}
    assert [s.dropout for s in plan] == pytest.approx([0.1, 0.1 + 0.2 / 3, 0.1 + 0.2 / 3, 0.1 + 0.4 / 3, 0.3, 0.3])
    assert [s.randaug for s in plan] == pytest.approx([5, 5 + 10 / 3, 5 + 10 / 3, 5 + 20 / 3, 15, 15])
    assert [s.mixup for s in plan] == [0.0] * 6
    assert plan[-1] == Stage(index=3, stages=4, resolution=32, dropout=0.3, randaug=15.0, mixup=0.0)


def test_custom_schedule_values() -> None:
    schedule = Progressive(stages=4, start_resolution=8, dropout=(0.0, 0.3), randaug=(0, 9), mixup=(0.0, 0.2))
    plan = schedule.plan(8, 32)
    assert [s.resolution for s in plan] == [8, 8, 16, 16, 24, 24, 32, 32]
    assert [s.dropout for s in plan] == pytest.approx([0, 0, 0.1, 0.1, 0.2, 0.2, 0.3, 0.3])
    assert [s.randaug for s in plan] == pytest.approx([0, 0, 3, 3, 6, 6, 9, 9])
    assert [s.mixup for s in plan] == pytest.approx([0, 0, 0.2 / 3, 0.2 / 3, 0.4 / 3, 0.4 / 3, 0.2, 0.2])


@pytest.mark.parametrize(("epochs", "stages"), [
    (5, [0, 1, 2, 3, 3]),
    (6, [0, 1, 1, 2, 3, 3]),
    (8, [0, 0, 1, 1, 2, 2, 3, 3]),
    (10, [0, 0, 1, 1, 1, 2, 2, 3, 3, 3]),
])
def test_epochs_split_into_stages_as_the_official_code_does(epochs: int, stages: list[int]) -> None:
    # stage i covers epochs [floor(i * N / M), floor((i + 1) * N / M)): the remainder goes late
    assert [s.index for s in Progressive().plan(epochs, 32)] == stages
    assert stages == [i for i in range(4) for _ in range(i * epochs // 4, (i + 1) * epochs // 4)]


def test_300px_in_three_stages_rounds_half_up() -> None:
    plan = Progressive(stages=3, start_resolution=128).plan(3, 300)
    assert [s.resolution for s in plan] == [128, 214, 300]
    # 8 -> 13 in 3 stages: 10.5 rounds up, not to the even 10
    assert [s.resolution for s in Progressive(stages=3, start_resolution=8).plan(3, 13)] == [8, 11, 13]


@pytest.mark.parametrize(("epochs", "sizes"), [(1, [32]), (2, [16, 32]), (3, [16, 24, 32]), (5, [16, 21, 27, 32, 32])])
def test_short_trainings_reach_the_end_and_end_longest(epochs: int, sizes: list[int]) -> None:
    plan = Progressive().plan(epochs, 32)
    assert [s.resolution for s in plan] == sizes
    assert plan[-1].dropout == 0.3 and plan[-1].randaug == 15.0
    assert plan[0].stages == min(4, epochs)


@pytest.mark.parametrize(("final", "start"), [(8, 8), (12, 8), (16, 8), (32, 16), (224, 112), (300, 152), (384, 192)])
def test_default_start_resolution(final: int, start: int) -> None:
    assert default_start_resolution(final) == start
    assert Progressive().plan(4, final)[0].resolution == start


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("stages", 0, "Progressive.stages must be a positive int, got 0"),
        ("stages", 2.0, "Progressive.stages must be a positive int"),
        ("start_resolution", 4, "Progressive.start_resolution must be an int >= 8, got 4"),
        ("dropout", (0.3, 0.1), "Progressive.dropout must not fall: start 0.3 exceeds end 0.1"),
        ("dropout", (0.1, 1.0), "Progressive.dropout must be a (start, end) pair of numbers >= 0 and < 1"),
        ("randaug", (-1, 5), "Progressive.randaug must be a (start, end) pair of numbers >= 0 and <= 30"),
        ("randaug", (5, 31), "got (5, 31)"),
        ("mixup", (0.3, 0.1), "Progressive.mixup must not fall"),
        ("mixup", (float("nan"), 0.2), "Progressive.mixup must be"),
        ("mixup", (0.0, float("inf")), "Progressive.mixup must be"),
        ("mixup", 0.2, "got 0.2"),
        ("dropout", ("0.1", "0.3"), "Progressive.dropout must be"),
    ],
)
def test_schedule_validation(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError) as info:
        Progressive(**{field: value})  # type: ignore[arg-type]
    assert message in str(info.value)


def test_start_above_the_final_size_is_refused() -> None:
    with pytest.raises(ValueError, match="Progressive.start_resolution 40 exceeds the final resolution 32"):
        Progressive(start_resolution=40).plan(6, 32)
    with pytest.raises(ValueError, match="epochs must be a positive int"):
        Progressive().plan(0, 32)


def test_schedule_is_frozen_and_hashable() -> None:
    schedule = Progressive(dropout=[0, 0.2])  # type: ignore[arg-type]
    assert schedule.dropout == (0.0, 0.2) and hash(schedule) == hash(Progressive(dropout=(0.0, 0.2)))
    assert len(set(schedule.plan(8, 32))) == 4  # one Stage object per stage, equal within a stage


# --------------------------------------------------------------------------- RandAugment


def _images(seed: int = 0, b: int = 64, res: int = 16) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, 3, res, res), dtype=torch.uint8, generator=g)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_rand_augment_keeps_shape_and_dtype(dtype: torch.dtype) -> None:
    x = _images().to(dtype)
    before = x.clone()
    out = rand_augment(x, 10, generator=_gen(0))
    assert out.shape == x.shape and out.dtype == dtype
    assert float(out.min()) >= 0 and float(out.max()) <= 255
    assert torch.equal(x, before)  # the caller's batch is left as it was
    assert rand_augment(x, 10, generator=_gen(0), layers=0) is not x


def test_rand_augment_is_deterministic_for_a_seed_and_changes_images() -> None:
    x = _images()
    a = rand_augment(x, 10, generator=_gen(1))
    b = rand_augment(x, 10, generator=_gen(1))
    c = rand_augment(x, 10, generator=_gen(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    changed = (a != x).flatten(1).any(1)
    # two layers, each applying a drawn op with probability 1/2: about 3/4 of the images change
    assert 0.5 < changed.float().mean().item() < 0.95


def test_rand_augment_without_ops_is_the_identity() -> None:
    x = _images()
    assert torch.equal(rand_augment(x, 10, generator=_gen(0), prob=0.0), x)
    assert torch.equal(rand_augment(x, 10, generator=_gen(0), layers=0), x)


def test_rand_augment_grows_with_the_magnitude() -> None:
    x = _images().float()
    change = [(rand_augment(x, m, generator=_gen(0)) - x).abs().mean().item() for m in (0, 5, 15)]
    assert change[0] < change[1] < change[2]


def test_rand_augment_bad_arguments() -> None:
    with pytest.raises(ValueError, match="magnitude"):
        rand_augment(_images(), -1, generator=_gen(0))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        rand_augment(_images()[:, :1], 5, generator=_gen(0))


def _only(op: int, b: int) -> torch.Tensor:
    return torch.full((b,), op, dtype=torch.long)


def test_translate_moves_by_whole_pixels_and_fills() -> None:
    x = _images(b=2).float()
    # 0.45 of the side at level 10: a strength of 8 / (0.45 * 16) moves 8 pixels
    shift = torch.tensor([8 / (0.45 * 16), -8 / (0.45 * 16)])
    fill = torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1)
    moved = _geometric(x, _only(_TRANSLATE_X, 2), shift, fill)
    # theta maps output to input: +8 samples 8 pixels to the right
    assert torch.allclose(moved[0, :, :, :8], x[0, :, :, 8:], atol=1e-3)
    assert torch.allclose(moved[0, :, :, 8:], fill[0].expand(3, 16, 8), atol=1e-4)
    assert torch.allclose(moved[1, :, :, 8:], x[1, :, :, :8], atol=1e-3)
    down = _geometric(x, _only(_TRANSLATE_Y, 2), shift, 0.0)
    assert torch.allclose(down[0, :, :8], x[0, :, 8:], atol=1e-3) and float(down[0, :, 8:].abs().max()) < 1e-4


def test_images_that_draw_no_geometric_op_keep_their_pixels() -> None:
    x = _images(b=4).float()
    op = torch.tensor([-1, 0, 5, _TRANSLATE_X])
    out = _geometric(x, op, torch.full((4,), 0.5), 128.0)
    assert torch.equal(out[:3], x[:3]) and not torch.equal(out[3], x[3])


def test_color_ops_are_pil_blends() -> None:
    x = _images(b=6).float()
    names = ("brightness", "contrast", "color", "sharpness", "autocontrast")
    op = torch.tensor([RAND_AUGMENT_OPS.index(n) for n in names] + [-1])
    signed = torch.tensor([-0.5, 0.5, -0.5, -0.5, 0.5, 0.5])  # factors 0.55, 1.45, 0.55, 0.55
    out = _color(x, op, signed)
    grey = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    assert torch.allclose(out[0], x[0] * 0.55, atol=1e-3)
    assert torch.allclose(out[1], (1.45 * x[1] - 0.45 * grey[1].mean()).clamp(0, 255), atol=1e-3)
    assert torch.allclose(out[2], 0.55 * x[2] + 0.45 * grey[2], atol=1e-3)
    smooth = F.conv2d(F.pad(x[3:4], (1, 1, 1, 1), mode="replicate"),
                      torch.tensor([[1.0, 1, 1], [1, 5, 1], [1, 1, 1]]).div(13).expand(3, 1, 3, 3), groups=3)[0]
    assert torch.allclose(out[3], 0.55 * x[3] + 0.45 * smooth, atol=1e-3)
    low, high = x[4].amin((1, 2), keepdim=True), x[4].amax((1, 2), keepdim=True)
    assert torch.allclose(out[4], (x[4] - low) * 255 / (high - low), atol=1e-3)
    assert torch.equal(out[5], x[5])


def test_no_magnitude_blanks_an_image() -> None:
    x = _images(b=2).float()
    brightness = RAND_AUGMENT_OPS.index("brightness")
    out = _color(x, torch.tensor([brightness, brightness]), torch.tensor([-3.0, -1.0]))
    # 1 - 0.9 * 3 would be below 0: the factor stops at level 10's 0.1
    assert torch.allclose(out, x * 0.1, atol=1e-3)
    far = _geometric(x, _only(_TRANSLATE_X, 2), torch.tensor([3.0, -3.0]), 0.0)
    half = _geometric(x, _only(_TRANSLATE_X, 2), torch.tensor([0.5 / 0.45, -0.5 / 0.45]), 0.0)
    assert torch.allclose(far, half)  # translation stops at half the side


def test_solarize_and_posterize() -> None:
    x = torch.arange(256, dtype=torch.float32).view(1, 1, 16, 16).expand(2, 3, 16, 16)
    chosen = torch.tensor([True, False])
    sol = _solarize(x, chosen, 0.5)  # threshold 128
    assert torch.equal(sol[0], torch.where(x[0] >= 128, 255 - x[0], x[0])) and torch.equal(sol[1], x[1])
    post = _posterize(x, chosen, 1.0)  # 4 bits kept
    assert torch.equal(post[0], torch.floor(x[0] / 16) * 16) and torch.equal(post[1], x[1])


# --------------------------------------------------------------------------- mixup


def test_mixup_mixes_images_and_labels_alike() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, 4, 4, generator=g)
    y = torch.tensor([0, 1, 2, 3, 4, 1])
    mixed, targets = mixup(x, y, 0.7, num_classes=5)
    assert torch.allclose(mixed, 0.7 * x + 0.3 * x.flip(0), atol=1e-6)
    expected = 0.7 * F.one_hot(y, 5).float() + 0.3 * F.one_hot(y.flip(0), 5).float()
    assert torch.allclose(targets, expected)
    assert torch.allclose(targets.sum(1), torch.ones(6))
    # the soft-target loss is the mixup loss, label smoothing included
    logits = torch.randn(6, 5, generator=g)
    for smoothing in (0.0, 0.1):
        soft = F.cross_entropy(logits, targets, label_smoothing=smoothing)
        pair = (0.7 * F.cross_entropy(logits, y, label_smoothing=smoothing)
                + 0.3 * F.cross_entropy(logits, y.flip(0), label_smoothing=smoothing))
        assert soft.item() == pytest.approx(pair.item(), rel=1e-6)


def test_mixup_at_one_is_the_identity() -> None:
    x = torch.randn(4, 3, 2, 2)
    y = torch.tensor([3, 0, 2, 1])
    mixed, targets = mixup(x, y, 1.0, num_classes=4)
    assert torch.equal(mixed, x) and torch.equal(targets, F.one_hot(y, 4).float())
    with pytest.raises(ValueError, match="lam"):
        mixup(x, y, 1.5, num_classes=4)


# --------------------------------------------------------------------------- nas train


def test_nas_train_progressive_history() -> None:
    proc = run_nas("train", TINY, "--dataset", "digits", "--epochs", "3", "--resolution", "16", "--progressive",
                   "--mixup", "0:0.2", "--json", check=True)
    data = json.loads(proc.stdout)
    history = data["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert [h["resolution"] for h in history] == [8, 12, 16]
    assert [h["stage"] for h in history] == [1, 2, 3]
    assert [h["dropout"] for h in history] == pytest.approx([0.1, 0.2, 0.3])
    assert [h["randaug"] for h in history] == pytest.approx([5, 10, 15])
    assert [h["mixup"] for h in history] == pytest.approx([0, 0.1, 0.2])
    assert [h["accuracy"] for h in history] == data["epoch_accuracies"]
    assert data["accuracy"] == history[-1]["accuracy"] and data["resolution"] == 16
    assert data["progressive"] == {"stages": 3, "start_resolution": 8, "dropout": [0.1, 0.3],
                                   "randaug": [5.0, 15.0], "mixup": [0.0, 0.2]}
    # the per-epoch lines name the stage, the size and the regularisation
    assert "epoch 2/3 (stage 2/3: 12px, dropout 0.2, randaug 10, mixup 0.1): held-out accuracy" in proc.stderr
    assert "8px rising to 16px in 3 stages" in proc.stderr


def test_nas_train_history_without_progressive() -> None:
    data = json.loads(run_nas("train", TINY, "--dataset", "digits", "--epochs", "1", "--resolution", "8", "--json",
                              check=True).stdout)
    assert data["history"] == [{"epoch": 1, "resolution": 8, "accuracy": data["accuracy"]}]
    assert data["progressive"] is None


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--mixup", "0.3:0.1"], ["--mixup 0.3:0.1", "must not fall"]),
        (["--dropout=-0.1:0.2"], ["--dropout -0.1:0.2", ">= 0"]),
        (["--dropout", "0.1:1"], ["--dropout 0.1:1", "< 1"]),
        (["--randaug", "5:x"], ["--randaug 5:x", "START:END"]),
        (["--randaug", "1:2:3"], ["--randaug 1:2:3", "START:END"]),
        (["--stages", "0"], ["--stages 0", "positive"]),
        (["--start-resolution", "4"], ["--start-resolution 4", ">= 8"]),
        (["--start-resolution", "40"], ["--start-resolution 40", "--resolution 32"]),
    ],
)
def test_nas_train_bad_progressive_options(args: list[str], words: list[str]) -> None:
    proc = run_nas("train", TINY, "--dataset", "digits", "--epochs", "2", "--resolution", "32", "--progressive", *args)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert all(word in proc.stderr for word in words), proc.stderr


def test_nas_train_progressive_options_need_progressive() -> None:
    proc = run_nas("train", TINY, "--dataset", "digits", "--epochs", "1", "--randaug", "5:15")
    assert proc.returncode == 2 and proc.stderr.strip() == "nas train: error: --randaug needs --progressive"


def test_constant_range_from_one_number() -> None:
    proc = run_nas("train", TINY, "--dataset", "digits", "--epochs", "1", "--resolution", "8", "--progressive",
                   "--dropout", "0.25", "--randaug", "0", "--json", check=True)
    (epoch,) = json.loads(proc.stdout)["history"]
    assert epoch["dropout"] == 0.25 and epoch["randaug"] == 0.0 and math.isfinite(epoch["accuracy"])
