"""The proxy trainer: it learns, it is reproducible, and a candidate's failure is a result."""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
import torch
from torch import nn

from nas.data import Dataset, load_dataset
from nas.progressive import Progressive
from nas.train import CandidateFailure, ProxyConfig, TrainResult, _reflect, _Run, train

FAST = ProxyConfig(epochs=3, resolution=16, batch_size=32)


def tiny_net(num_classes: int = 10, width: int = 16) -> nn.Module:
    """A small conv net with BN: the shape of the real candidates, seconds to train."""

    def conv_bn(cin: int, cout: int, stride: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

    return nn.Sequential(
        *conv_bn(3, width, 1),
        *conv_bn(width, 2 * width, 2),
        *conv_bn(2 * width, 4 * width, 2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4 * width, num_classes),
    )


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny nets gain nothing from a second thread, and on a shared 2-core machine an
    OpenMP team whose other thread is descheduled spins: one thread keeps the file fast."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits")


def _seeded_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return tiny_net()


def test_learns_digits(digits: Dataset) -> None:
    calls: list[tuple[int, float]] = []
    threads = torch.get_num_threads()
    result = train(_seeded_net(), digits, FAST, on_epoch=lambda e, a: calls.append((e, a)))
    assert isinstance(result, TrainResult)
    assert result.accuracy > 0.8  # chance is 0.1
    assert [e for e, _ in calls] == [1, 2, 3]
    assert tuple(a for _, a in calls) == result.epoch_accuracies
    assert result.accuracy == result.epoch_accuracies[-1]
    assert all(0.0 <= a <= 1.0 for a in result.epoch_accuracies)
    assert result.train_seconds > 0 and result.images_per_second > 0
    assert torch.get_num_threads() == threads


def test_same_seed_same_result_and_caller_rng_untouched(digits: Dataset) -> None:
    config = dataclasses.replace(FAST, epochs=1)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = train(_seeded_net(), digits, config)
    b = train(_seeded_net(), digits, config)
    assert a.epoch_accuracies == b.epoch_accuracies
    torch.manual_seed(123)
    assert torch.equal(torch.get_rng_state(), before)


def test_model_keeps_trained_weights(digits: Dataset) -> None:
    model = _seeded_net()
    initial = [p.detach().clone() for p in model.parameters()]
    result = train(model, digits, dataclasses.replace(FAST, epochs=1), device="cpu")
    assert any(not torch.equal(a, b.detach()) for a, b in zip(initial, model.parameters()))
    # the caller can evaluate the trained model itself and gets the trainer's number
    data = digits.val_x.float()
    data = nn.functional.interpolate(data, size=(16, 16), mode="bilinear", align_corners=False).round()
    mean = torch.tensor(digits.mean).view(1, 3, 1, 1) * 255
    std = torch.tensor(digits.std).view(1, 3, 1, 1) * 255
    model.eval()
    with torch.no_grad():
        predictions = model((data - mean) / std).argmax(dim=1)
    assert (predictions == digits.val_y).float().mean().item() == pytest.approx(result.accuracy, abs=0.02)


class _Recorder(nn.Module):
    """Records what the network is fed."""

    def __init__(self) -> None:
        super().__init__()
        self.net = tiny_net()
        self.shapes: set[tuple[int, ...]] = set()
        self.means: list[float] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.shapes.add(tuple(x.shape[1:]))
        self.means.append(float(x.mean()))
        assert x.dtype == torch.float32
        return self.net(x)


def test_inputs_resized_once_and_normalised(digits: Dataset) -> None:
    model = _Recorder()
    train(model, digits, ProxyConfig(epochs=1, resolution=12, batch_size=64))
    assert model.shapes == {(3, 12, 12)}
    assert abs(sum(model.means) / len(model.means)) < 0.3


@pytest.mark.parametrize("optimizer", ["sgd", "rmsprop"])
def test_optimizers_run(digits: Dataset, optimizer: str) -> None:
    lr = 0.1 if optimizer == "sgd" else 0.003
    config = dataclasses.replace(FAST, epochs=2, optimizer=optimizer, lr=lr)
    assert train(_seeded_net(), digits, config).accuracy > 0.3


def test_weight_decay_spares_bn_and_bias(digits: Dataset) -> None:
    run = _Run(tiny_net(), digits, FAST, torch.device("cpu"))
    groups = run.optimizer.param_groups
    decayed = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    for module in run.model.modules():
        if isinstance(module, (nn.BatchNorm2d, nn.Linear)):
            for name, param in module.named_parameters(recurse=False):
                assert (id(param) in decayed) == (name == "weight" and isinstance(module, nn.Linear))


def test_schedule_warms_up_then_decays_to_zero(digits: Dataset) -> None:
    config = dataclasses.replace(FAST, epochs=4, lr=0.4, warmup_epochs=1.0)
    run = _Run(tiny_net(), digits, config, torch.device("cpu"))
    steps = run.steps_per_epoch
    lrs = [run.lr_at(s) for s in range(run.total_steps)]
    assert lrs[steps - 1] == pytest.approx(0.4)
    assert all(a < b for a, b in zip(lrs[: steps - 1], lrs[1:steps]))
    assert all(a >= b for a, b in zip(lrs[steps - 1:], lrs[steps:]))
    assert lrs[-1] < 0.4 * 1e-3


def _crops(source: torch.Tensor, res: int, pad: int) -> dict[tuple[bool, int, int], torch.Tensor]:
    """Every view the augmentation may make of ``source``: (flip, dy, dx) -> images."""
    ar = torch.arange(res)
    views = {}
    for flip in (False, True):
        for dy in range(-pad, pad + 1):
            for dx in range(-pad, pad + 1):
                rows = _reflect(ar + dy, res)
                cols = _reflect((res - 1 - ar if flip else ar) + dx, res)
                views[(flip, dy, dx)] = source[:, :, rows][:, :, :, cols]
    return views


@pytest.mark.parametrize("hflip", [False, True])
def test_augmentation_is_crop_and_flip(digits: Dataset, hflip: bool) -> None:
    assert _reflect(torch.tensor([-3, -1, 0, 4, 5, 7]), 5).tolist() == [3, 1, 0, 4, 3, 1]
    # at resolution 8 the crop pads by 1: every view is one of 9 shifts, or of their mirrors
    run = _Run(tiny_net(), dataclasses.replace(digits, hflip=hflip), ProxyConfig(resolution=8), torch.device("cpu"))
    source = run.feed.train_x  # resident: the whole set at 8 px
    idx = torch.arange(64, 128)
    views = run.augmented_batch(source, idx)
    assert views.shape == (64, 3, 8, 8) and views.dtype == torch.uint8
    matches = {key: (views == crop).flatten(1).all(1) for key, crop in _crops(source[idx], 8, 1).items()}
    plain = torch.stack([m for (flip, _, _), m in matches.items() if not flip]).any(0)
    mirrored = torch.stack([m for (flip, _, _), m in matches.items() if flip]).any(0)
    assert bool((plain | mirrored).all())
    assert 0 < int((~matches[(False, 0, 0)]).sum()) < 64  # some views shifted, not all
    only_mirrored = int((mirrored & ~plain).sum())
    assert (0 < only_mirrored < 64) if hflip else only_mirrored == 0


# --------------------------------------------------------------------------- progressive
# no dropout, so the plain tiny net fits; RandAugment and mixup on, so their draws count
PROGRESSIVE = Progressive(stages=3, start_resolution=8, dropout=(0.0, 0.0), randaug=(5.0, 15.0), mixup=(0.0, 0.2))


class _SizeRecorder(nn.Module):
    """Records the image size of each forward, and whether it trained; has a classifier dropout slot."""

    def __init__(self, dropout: nn.Module) -> None:
        super().__init__()
        self.net = tiny_net()
        self.dropout = dropout
        self.calls: list[tuple[bool, int]] = []
        self.rates: list[float] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append((self.training, x.shape[-1]))
        if self.training and isinstance(self.dropout, nn.Dropout):
            self.rates.append(self.dropout.p)
        return self.dropout(self.net(x))


def test_progressive_trains_each_stage_at_its_size_and_evaluates_at_the_final_one(digits: Dataset) -> None:
    model = _SizeRecorder(nn.Identity())
    result = train(model, digits, dataclasses.replace(FAST, resolution=16), progressive=PROGRESSIVE)
    steps = len(digits.train) // FAST.batch_size
    trained = [size for training, size in model.calls if training]
    assert trained == [8] * steps + [12] * steps + [16] * steps
    assert {size for training, size in model.calls if not training} == {16}
    assert len(result.epoch_accuracies) == 3 and result.accuracy > 0.5  # chance is 0.1


def test_progressive_raises_dropout_stage_by_stage(digits: Dataset) -> None:
    # an Identity (a model built with dropout 0) becomes a Dropout the schedule can raise
    model = _SizeRecorder(nn.Identity())
    schedule = dataclasses.replace(PROGRESSIVE, dropout=(0.1, 0.3))
    train(model, digits, dataclasses.replace(FAST, resolution=16), progressive=schedule)
    steps = len(digits.train) // FAST.batch_size
    assert model.rates == pytest.approx([0.1] * steps + [0.2] * steps + [0.3] * steps)
    assert isinstance(model.dropout, nn.Dropout) and model.dropout.p == pytest.approx(0.3)


def test_progressive_dropout_needs_a_dropout_module(digits: Dataset) -> None:
    with pytest.raises(ValueError, match=r"needs model.dropout .* Sequential has none: keep dropout at 0:0"):
        train(tiny_net(), digits, FAST, progressive=Progressive())


def test_progressive_start_above_the_final_size(digits: Dataset) -> None:
    with pytest.raises(ValueError, match="start_resolution 24 exceeds the final resolution 16"):
        train(tiny_net(), digits, dataclasses.replace(FAST, resolution=16),
              progressive=dataclasses.replace(PROGRESSIVE, start_resolution=24))


def test_progressive_same_seed_same_run_resident_or_streamed(digits: Dataset) -> None:
    config = dataclasses.replace(FAST, epochs=2, resolution=16)
    results, weights = [], []
    for on_device in (True, True, False):
        model = _seeded_net()
        results.append(train(model, digits, dataclasses.replace(config, data_on_device=on_device),
                             progressive=PROGRESSIVE).epoch_accuracies)
        weights.append(model.state_dict())
    assert results[0] == results[1] == results[2]
    assert all(torch.equal(weights[0][k], w[k]) for w in weights[1:] for k in weights[0])
    other = train(_seeded_net(), digits, dataclasses.replace(config, seed=1), progressive=PROGRESSIVE)
    assert other.epoch_accuracies != results[0]


class _Huge(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = tiny_net()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x) * 1e6


def test_huge_outputs_diverge(digits: Dataset) -> None:
    with pytest.raises(CandidateFailure) as info:
        train(_Huge(), digits, FAST)
    assert info.value.reason.startswith("diverged: loss ")
    assert info.value.reason.endswith("at epoch 1 step 1")
    assert str(info.value) == info.value.reason


def test_huge_learning_rate_diverges(digits: Dataset) -> None:
    with pytest.raises(CandidateFailure) as info:
        train(_seeded_net(), digits, dataclasses.replace(FAST, epochs=1, lr=1e6))
    assert info.value.reason.startswith("diverged")


class _OutOfMemory(nn.Module):
    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.net = tiny_net()
        self.error = error

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise self.error


@pytest.mark.parametrize(
    "error",
    [
        torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 bytes (out of memory)"),
    ],
)
def test_out_of_memory_is_a_candidate_failure(digits: Dataset, error: Exception) -> None:
    with pytest.raises(CandidateFailure) as info:
        train(_OutOfMemory(error), digits, FAST)
    assert info.value.reason.startswith("oom: ")
    assert "\n" not in info.value.reason
    # the process stays usable for the next candidate (one epoch ends at the warm-up's
    # peak learning rate, so two tell learning from chance, 0.1)
    assert train(_seeded_net(), digits, dataclasses.replace(FAST, epochs=2)).accuracy > 0.5


def test_other_errors_propagate_unchanged(digits: Dataset) -> None:
    error = RuntimeError("a bug in the model")
    with pytest.raises(RuntimeError) as info:
        train(_OutOfMemory(error), digits, FAST)
    assert info.value is error


def test_wrong_output_shape_is_invalid(digits: Dataset) -> None:
    with pytest.raises(CandidateFailure) as info:
        train(tiny_net(num_classes=7), digits, FAST)
    assert info.value.reason == "invalid: model output (32, 7), expected (32, 10) logits"


class _Stop(Exception):
    pass


def test_on_epoch_exception_propagates(digits: Dataset) -> None:
    seen: list[int] = []

    def prune(epoch: int, accuracy: float) -> None:
        seen.append(epoch)
        if epoch == 1:
            raise _Stop("pruned")

    with pytest.raises(_Stop, match="pruned"):
        train(_seeded_net(), digits, FAST, on_epoch=prune)
    assert seen == [1]


def test_on_epoch_out_of_memory_message_is_not_an_oom(digits: Dataset) -> None:
    """A callback's error is the caller's, even when it mentions memory."""

    def callback(epoch: int, accuracy: float) -> None:
        raise RuntimeError("out of memory in the callback")

    with pytest.raises(RuntimeError, match="in the callback"):
        train(_seeded_net(), digits, dataclasses.replace(FAST, epochs=1), on_epoch=callback)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("epochs", 0),
        ("epochs", 1.5),
        ("resolution", -1),
        ("resolution", 1),
        ("resolution", 7),
        ("batch_size", True),
        ("optimizer", "adam"),
        ("lr", 0.0),
        ("lr", float("nan")),
        ("momentum", 1.0),
        ("weight_decay", -1e-4),
        ("label_smoothing", 1.0),
        ("warmup_epochs", -1.0),
        ("max_loss", 0.0),
        ("dtype", "float16"),
        ("channels_last", "yes"),
        ("seed", None),
        ("data_on_device", "yes"),
        ("device_memory_share", 0.0),
        ("device_memory_share", 1.5),
    ],
)
def test_config_validation(field: str, value: object) -> None:
    with pytest.raises(ValueError) as info:
        ProxyConfig(**{field: value})  # type: ignore[arg-type]
    assert f"ProxyConfig.{field}" in str(info.value) and repr(value) in str(info.value)


def test_config_resolution_message() -> None:
    with pytest.raises(ValueError) as info:
        ProxyConfig(resolution=1)
    assert str(info.value) == "ProxyConfig.resolution must be an int >= 8, got 1"


def test_config_is_frozen_and_hashable() -> None:
    config = ProxyConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.epochs = 3  # type: ignore[misc]
    assert hash(config) == hash(ProxyConfig())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bf16_channels_last(digits: Dataset) -> None:
    model = _seeded_net()
    result = train(model, digits, FAST, device="cuda")
    assert result.accuracy > 0.8
    assert next(model.parameters()).device.type == "cuda"
    assert next(model.parameters()).dtype == torch.float32
