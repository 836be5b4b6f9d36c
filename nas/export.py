"""Export any trial's network: ONNX, TorchScript or a plain ``state_dict`` file.

A trial's weights are the trained proxy weights when the run kept them
(``keep_weights: true``; :func:`nas.evaluate.evaluate` saves them to
``RunDir.weights_path(n)``), else the weights the trial started training from:
``torch.manual_seed(seed)`` then :func:`nas.build_model`, deterministic, and marked
``trained: False``.

A ``state_dict`` export is a dict of plain types and tensors (arch string, number of
classes, resolution, weights), so it loads with ``torch.load(weights_only=True)``: no
pickled code runs. :func:`load_exported` rebuilds the module from it (and opens
TorchScript and ONNX exports too). ONNX needs the ``export`` extra:
``pip install 'nas[export]'``.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import warnings
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["FORMATS", "STATE_DICT_FORMAT", "TrialWeights", "ExportResult", "export_model", "export_trial",
           "export_file", "find_trial", "load_exported", "save_state_dict", "trial_model", "check_writable"]

FORMATS = ("onnx", "torchscript", "state_dict")
STATE_DICT_FORMAT = "nas.state_dict/1"
_META_FILE = "nas.json"  # extra file inside TorchScript archives


@dataclass(frozen=True)
class TrialWeights:
    """Where a trial's exported weights come from.

    Attributes:
        run: The run directory.
        number: The trial.
        arch: Its canonical arch string.
        num_classes: Classifier outputs (the run's data set).
        resolution: The run's proxy resolution (the export's input size).
        trained: True for the kept proxy-trained weights, False for the seeded initialisation.
        source: The weights file, or ``seed N``.
        reward: The trial's reward (None when it has none).
    """

    run: str
    number: int
    arch: str
    num_classes: int
    resolution: int
    trained: bool
    source: str
    reward: float | None = None


@dataclass(frozen=True)
class ExportResult:
    """One export: the file, its format, and the trial's :class:`TrialWeights`."""

    path: str
    format: str
    weights: TrialWeights

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "format": self.format, **asdict(self.weights)}


# -- which trial ------------------------------------------------------------------------------------
def find_trial(run: str | Path, trial: int | str) -> dict[str, Any]:
    """The ledger row of trial ``trial`` (a number, or ``"best"``: highest reward among COMPLETE trials).

    Raises:
        FileNotFoundError: ``run`` is not a run directory.
        ValueError: No such trial ("run X has no trial 99999"), or no COMPLETE trial for "best".
    """
    from nas.study import RunDir, ledger

    rows = ledger(RunDir(run).load_study())
    if str(trial) == "best":
        done = [r for r in rows if r["state"] == "COMPLETE" and r["reward"] is not None]
        if not done:
            raise ValueError(f"run {run} has no COMPLETE trial to call best")
        return max(done, key=lambda r: (r["reward"], -r["number"]))
    try:
        number = int(trial)
    except (TypeError, ValueError):
        raise ValueError(f"trial must be a number or 'best', got {trial!r}") from None
    for row in rows:
        if row["number"] == number:
            if not row["arch"]:
                raise ValueError(f"run {run}: trial {number} has no architecture yet ({row['state']})")
            return row
    raise ValueError(f"run {run} has no trial {number} (it has {len(rows)} trials, 0..{len(rows) - 1})"
                     if rows else f"run {run} has no trial {number} (it has no trials)")


def _num_classes(config: dict[str, Any], arch: Any, params: Any, resolution: int) -> int:
    """The run's number of classes, from the trial's parameter count (no data loading).

    Parameters grow by ``head + 1`` per class (the classifier's weights and bias), so the
    count at one class gives the rest exactly; only when that fails is the data loaded.
    """
    from nas.cost import model_cost

    if params is not None and not (isinstance(params, float) and math.isnan(params)):
        one = model_cost(arch, resolution, 1).params
        extra, rest = divmod(int(params) - one, arch.head.channels + 1)
        if rest == 0 and extra >= 0:
            return extra + 1
    from nas.data import load_dataset

    res = resolution if config.get("dataset") in ("imagefolder", "synthetic") else None
    return load_dataset(config.get("dataset", "digits"), data_dir=config.get("data_dir"), seed=0,
                        resolution=res).num_classes


def trial_model(run: str | Path, trial: int | str) -> tuple[nn.Module, TrialWeights]:
    """The trial's network in eval mode, with its kept weights or its seeded initialisation."""
    from nas.arch import parse_arch
    from nas.builder import build_model
    from nas.study import RunDir

    run_dir = RunDir(run)
    row = find_trial(run, trial)
    config = run_dir.read_config()
    number = int(row["number"])
    arch = parse_arch(row["arch"])
    resolution = int((config.get("proxy") or {}).get("resolution") or 32)
    candidates = [run_dir.weights_path(number)]
    if row.get("duplicate_of") is not None:
        candidates.append(run_dir.weights_path(int(row["duplicate_of"])))
    kept = next((p for p in candidates if p.is_file()), None)
    if kept is not None:
        saved = _load_state_file(kept)
        if saved.get("arch") != str(arch):
            raise ValueError(f"{kept}: holds {saved.get('arch')!r}, not trial {number}'s arch {str(arch)!r}")
        num_classes = int(saved["num_classes"])
        model = build_model(arch, num_classes=num_classes)
        model.load_state_dict(saved["state_dict"])
        info = TrialWeights(str(run), number, str(arch), num_classes, resolution, True, str(kept), row.get("reward"))
    else:
        seed = row.get("seed")
        if seed is None:  # the trial ended before recording it: the search's own rule
            seed = (int(config.get("seed") or 0) * 1_000_003 + number) % 2**31
        num_classes = _num_classes(config, arch, row.get("params"), resolution)
        torch.manual_seed(int(seed))
        model = build_model(arch, num_classes=num_classes)
        info = TrialWeights(str(run), number, str(arch), num_classes, resolution, False, f"seed {int(seed)}",
                            row.get("reward"))
    return model.eval(), info


# -- writing ----------------------------------------------------------------------------------------
def check_writable(path: str | Path) -> Path:
    """Make sure ``path`` can be written, before any work is spent on what goes in it.

    The folder is created if missing, and the file is opened for appending (and removed
    again if it was not there), which is the only test that holds for every file system.

    Raises:
        OSError: one line naming the path and why it cannot be written.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a directory; give a file name for the output")
    existed = path.exists()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "ab"):
            pass
    except OSError as err:
        raise OSError(f"{path}: cannot be written ({err.strerror or err}); choose another --out") from None
    if not existed:
        path.unlink()
    return path



def _meta(arch: str, num_classes: int, resolution: int, **extra: Any) -> dict[str, Any]:
    return {"format": STATE_DICT_FORMAT, "arch": str(arch), "num_classes": int(num_classes),
            "resolution": int(resolution), **extra}


def save_state_dict(model: nn.Module, path: str | Path, *, arch: str, num_classes: int, resolution: int,
                    **extra: Any) -> Path:
    """Write a ``state_dict`` export: plain types and CPU tensors only (``weights_only=True`` loads it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    plain = {k: v for k, v in extra.items() if v is None or isinstance(v, (bool, int, float, str))}
    torch.save({**_meta(arch, num_classes, resolution, **plain), "state_dict": state}, path)
    return path


def export_model(model: nn.Module, path: str | Path, format: str, *, arch: str, num_classes: int,
                 resolution: int, **extra: Any) -> Path:
    """Write ``model`` as ``format`` (onnx, torchscript or state_dict) for inputs ``(N, 3, R, R)``.

    ONNX has a dynamic batch axis (input ``input``, output ``logits``) and the arch string
    in its metadata; TorchScript carries the same facts in an extra file ``nas.json``.
    """
    if format not in FORMATS:
        raise ValueError(f"unknown export format {format!r} (choose from {', '.join(FORMATS)})")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval().cpu()
    if format == "state_dict":
        return save_state_dict(model, path, arch=arch, num_classes=num_classes, resolution=resolution, **extra)
    meta = _meta(arch, num_classes, resolution, **{k: v for k, v in extra.items()
                                                   if v is None or isinstance(v, (bool, int, float, str))})
    example = torch.randn(2, 3, resolution, resolution, generator=torch.Generator().manual_seed(0))
    if format == "torchscript":
        # torch.jit is deprecated upstream but TorchScript files still load everywhere
        # (C++, mobile); its warnings say nothing the user can act on here.
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore", DeprecationWarning)
            traced = torch.jit.trace(model, example, check_trace=False)
            torch.jit.save(traced, str(path), _extra_files={_META_FILE: json.dumps(meta)})
        return path
    _export_onnx(model, example, path, meta)
    return path


def _export_onnx(model: nn.Module, example: torch.Tensor, path: Path, meta: dict[str, Any]) -> None:
    try:
        import onnx
        import onnxscript  # noqa: F401  (the exporter needs it)
    except ImportError:
        raise ImportError("ONNX export needs onnx and onnxscript: pip install 'nas[export]'") from None
    import logging

    batch = torch.export.Dim("batch", min=1)
    # The exporter reports progress on stdout and warns about optional packages: keep
    # stdout clean for --json and the user's terminal quiet.
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (example,), str(path), input_names=["input"], output_names=["logits"],
                              dynamic_shapes=({0: batch},), dynamo=True, external_data=False, verbose=False)
    finally:
        quiet.setLevel(level)
    proto = onnx.load(str(path))
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = f"nas.{key}", json.dumps(value)
    onnx.save(proto, str(path))


def export_trial(run: str | Path, trial: int | str, format: str, out: str | Path, *,
                 untrained: bool = False) -> ExportResult:
    """Export one trial of a run (``nas export RUN --trial N|best --format F --out PATH``).

    Args:
        untrained: Export the trial's initial weights when the run kept no trained ones;
            without it that is refused, since an untrained network is rarely what is wanted.

    Raises:
        ValueError: no such trial, or no trained weights (and not ``untrained``).
    """
    if format not in FORMATS:
        raise ValueError(f"unknown export format {format!r} (choose from {', '.join(FORMATS)})")
    check_writable(out)
    model, info = trial_model(run, trial)
    if not info.trained and not untrained:
        raise ValueError(f"{run}: trial {info.number} kept no trained weights (the run has keep_weights: false); "
                         f"train it with `nas train {run} --trial {info.number} --out best.pt` and export that file, "
                         "or pass --untrained for its initial weights")
    path = export_model(model, out, format, arch=info.arch, num_classes=info.num_classes,
                        resolution=info.resolution, trained=info.trained, trial=info.number, run=str(run))
    return ExportResult(str(path), format, info)


def export_file(source: str | Path, format: str, out: str | Path) -> tuple[Path, dict[str, Any]]:
    """Convert a ``state_dict`` export (``nas train --out``) to ``format``; returns the path and its facts."""
    from nas.builder import build_model

    check_writable(out)
    saved = _load_state_file(Path(source))
    model = build_model(saved["arch"], num_classes=int(saved["num_classes"]))
    model.load_state_dict(saved["state_dict"])
    facts = {k: v for k, v in saved.items() if k not in ("state_dict", "format")}
    path = export_model(model, out, format, **{**facts, "arch": saved["arch"],
                                               "num_classes": int(saved["num_classes"]),
                                               "resolution": int(saved.get("resolution") or 224)})
    return path, facts


# -- reading ---------------------------------------------------------------------------------------------
def _load_state_file(path: Path) -> dict[str, Any]:
    """A torch file read with ``weights_only=True``; refuses pickled code in one line."""
    import pickle

    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first = next((line.strip() for line in str(err).splitlines() if "GLOBAL" in line or "Unsupported" in line),
                     str(err).strip().splitlines()[0] if str(err).strip() else "")
        raise ValueError(f"{path}: refused to load: the file holds pickled objects, not plain weights "
                         f"(torch.load weights_only=True: {first[:160]})") from None
    except (RuntimeError, EOFError) as err:
        raise ValueError(f"{path}: not a state_dict export: {str(err).strip().splitlines()[0][:160]}") from None
    if not isinstance(data, dict) or not isinstance(data.get("state_dict"), dict) or not data.get("arch"):
        raise ValueError(f"{path}: not a nas state_dict export (expected a dict with 'arch' and 'state_dict')")
    return data


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(n.endswith("constants.pkl") or "/code/" in n for n in archive.namelist())


class OnnxModule(nn.Module):
    """An ONNX export run by onnxruntime behind the ``nn.Module`` call (inference only, CPU)."""

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        try:
            import onnx
            import onnxruntime as ort
        except ImportError:
            raise ImportError("running ONNX exports needs onnx and onnxruntime: pip install 'nas[export]'") from None
        self.path = str(path)
        meta = {p.key[4:]: json.loads(p.value) for p in onnx.load(self.path, load_external_data=False).metadata_props
                if p.key.startswith("nas.")}
        self.arch, self.num_classes = meta.get("arch"), meta.get("num_classes")
        self.resolution = meta.get("resolution")
        self.session = ort.InferenceSession(self.path, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.session.run(None, {self.input_name: x.detach().cpu().float().numpy()})[0]
        return torch.from_numpy(out)


def load_exported(path: str | Path) -> nn.Module:
    """Rebuild a network from an export, in eval mode.

    A ``state_dict`` file (``nas export --format state_dict``, ``nas train --out``, or a
    run's kept weights) becomes :func:`nas.build_model` of its arch with the weights
    loaded (``model.arch`` is the arch); TorchScript loads as a ``ScriptModule`` and ONNX
    as an :class:`OnnxModule` run by onnxruntime (both with ``.arch`` set).

    Raises:
        FileNotFoundError: No such file.
        ValueError: Not an export, or a file whose pickle would run code (refused:
            it is read with ``weights_only=True``).
    """
    from nas.builder import build_model

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if path.suffix.lower() == ".onnx":
        return OnnxModule(path).eval()
    if _is_torchscript(path):
        files = {_META_FILE: ""}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(path), map_location="cpu", _extra_files=files)
        meta = json.loads(files[_META_FILE] or "{}")
        module.arch = meta.get("arch")
        return module.eval()
    data = _load_state_file(path)
    model = build_model(data["arch"], num_classes=int(data.get("num_classes") or 1000))
    try:
        model.load_state_dict(data["state_dict"])
    except RuntimeError as err:
        raise ValueError(f"{path}: the weights do not fit {data['arch']!r}: {str(err).splitlines()[0][:160]}") from None
    return model.eval()
