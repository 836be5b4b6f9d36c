"""Batched RandAugment and mixup: whole batches on the device, no per-sample Python work.

RandAugment (Cubuk et al. 2020) applies ``layers`` random ops to each image at one shared
magnitude; mixup (Zhang et al. 2018) blends each image, and its label, with another.
Both are the regularisation that progressive learning raises along with the image size
(EfficientNetV2 §4, :mod:`nas.progressive`). Here every image of a batch draws its own op
in each layer, and each op is written so that an image that did not draw it passes through
unchanged: a per-image parameter at its identity value, or a ``torch.where`` on a per-image
mask. A layer is then a fixed, short sequence of whole-batch tensor ops whatever the draws,
and all randomness comes from the generator it is given, so a seed gives the same images.

Magnitudes use the level scale of the TensorFlow and timm implementations (10 is the
reference maximum, at which the geometric ops reach timm's ranges: rotate 30°, shear 0.3,
translate 45 % of the side); a magnitude above 10 extrapolates, as the EfficientNetV2
schedules (up to 15 for V2-S) ask, short of blanking an image: translation stops at half
the side, and the enhancing factor at 0.1. The enhancing ops follow timm's "increasing"
variants, whose strength grows with the magnitude in both directions (factor 1 ± 0.9 ·
m/10), rather than TF's, whose factor at low magnitudes is a near-grey image; posterize
keeps 8 − 4 · m/10 bits, solarize inverts from 256 · (1 − m/10) up. Each drawn op applies
with probability ``prob`` (timm's 0.5). Equalize and the other per-image histogram ops are
left out: they do not batch.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["RAND_AUGMENT_OPS", "mixup", "rand_augment"]

RAND_AUGMENT_OPS: tuple[str, ...] = (
    "autocontrast",
    "brightness",
    "color",
    "contrast",
    "sharpness",
    "posterize",
    "solarize",
    "rotate",
    "shear_x",
    "shear_y",
    "translate_x",
    "translate_y",
)
(_AUTOCONTRAST, _BRIGHTNESS, _COLOR, _CONTRAST, _SHARPNESS, _POSTERIZE, _SOLARIZE, _ROTATE, _SHEAR_X, _SHEAR_Y,
 _TRANSLATE_X, _TRANSLATE_Y) = range(len(RAND_AUGMENT_OPS))
_NONE = -1  # an image that applies no op in a layer

_LEVEL = 10.0             # the magnitude at which the ranges below are reached
_ROTATE_DEGREES = 30.0
_SHEAR = 0.3
_TRANSLATE = 0.45         # of the image side
# beyond half the side most of the content has left the image; it is also the most TF's
# absolute range (100 px at level 10) reaches over V2-S's schedule (128 px at 5, 300 px at 15)
_TRANSLATE_MAX = 0.5
_ENHANCE = 0.9            # factor 1 ± 0.9 at magnitude 10
# the factor's floor, reached at level 10: below it, an image would fade to black or to a
# flat grey and teach nothing but noise
_ENHANCE_MIN = 0.1
_POSTERIZE_BITS = 4       # bits dropped at magnitude 10 (8 → 4)
# PIL's ITU-R 601-2 luma, the grey that "color" and "contrast" blend towards
_LUMA = (0.299, 0.587, 0.114)


def rand_augment(
    images: torch.Tensor,
    magnitude: float,
    *,
    generator: torch.Generator,
    layers: int = 2,
    prob: float = 0.5,
    fill: float | torch.Tensor = 128.0,
) -> torch.Tensor:
    """RandAugment on a batch: per image and layer, one op drawn from ``RAND_AUGMENT_OPS``.

    Args:
        images: ``(B, 3, H, W)`` in 0..255, uint8 or floating point.
        magnitude: The shared strength, on the 0..10 level scale (above 10 extrapolates).
        generator: Draws the ops, their signs and whether each applies; on the images' device.
        layers: Ops applied in sequence to each image.
        prob: Chance that an image applies the op it drew in a layer (timm's 0.5: some
            images stay clean; the official EfficientNetV2 code always applies it).
        fill: What geometric ops move into the image: a number or a ``(1, 3, 1, 1)``
            per-channel tensor in 0..255 (the data set's mean keeps a warp's border neutral).

    Returns:
        The augmented images, with the input's shape and dtype (uint8 is rounded back).
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"rand_augment needs (B, 3, H, W) images, got shape {tuple(images.shape)}")
    if not (math.isfinite(magnitude) and magnitude >= 0):
        raise ValueError(f"rand_augment magnitude must be a finite number >= 0, got {magnitude!r}")
    x = images.float()
    strength = magnitude / _LEVEL
    for _ in range(layers):
        b, dev = len(x), x.device
        op = torch.randint(0, len(RAND_AUGMENT_OPS), (b,), device=dev, generator=generator)
        applies = torch.rand(b, device=dev, generator=generator) < prob
        op = torch.where(applies, op, _NONE)
        # the direction of the signed ops: rotate left or right, brighten or darken, ...
        sign = torch.randint(0, 2, (b,), device=dev, generator=generator).float().mul_(2).sub_(1)
        x = _geometric(x, op, sign * strength, fill)
        x = _color(x, op, sign * strength)
        x = _solarize(x, op == _SOLARIZE, strength)
        x = _posterize(x, op == _POSTERIZE, strength)
    x = x.clamp(0.0, 255.0)  # the stretch and the warp may round a hair past the range
    if images.dtype == torch.uint8:
        return x.round_().to(torch.uint8)
    return x.to(images.dtype)


def mixup(images: torch.Tensor, labels: torch.Tensor, lam: float, *, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix each image and its label with those of the batch reversed, in proportion ``lam``.

    The partner is the batch reversed (timm's way): the batch order is random already, so
    this pairs images at random without a draw or a gather. The targets are the matching
    blend of the two one-hot rows, so ``F.cross_entropy(logits, targets)`` is the mixup
    loss ``lam·CE(y) + (1 − lam)·CE(y reversed)`` (and its ``label_smoothing`` smooths
    both labels, as smoothing each before the mix would).

    Args:
        images: ``(B, ...)`` floating point (normalised) images.
        labels: ``(B,)`` int64 class indices.
        lam: The share of each image's own content, in [0, 1] (one Beta(α, α) draw per batch).
        num_classes: Width of the targets.

    Returns:
        ``(mixed images, soft targets (B, num_classes))``; each target row sums to 1.
    """
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"mixup lam must lie in [0, 1], got {lam!r}")
    targets = F.one_hot(labels, num_classes).float()
    return _blend(images, lam), _blend(targets, lam)


def _blend(x: torch.Tensor, lam: float) -> torch.Tensor:
    """``lam · x + (1 − lam) · x reversed``, out of place (the reversed copy reads the original)."""
    return x.mul(lam).add_(x.flip(0), alpha=1.0 - lam)


# --------------------------------------------------------------------------- the ops


def _geometric(x: torch.Tensor, op: torch.Tensor, signed: torch.Tensor, fill: float | torch.Tensor) -> torch.Tensor:
    """Rotate, shear and translate as one affine warp of the batch (identity for the others)."""
    def amount(which: int, scale: float) -> torch.Tensor:
        return torch.where(op == which, signed * scale, 0.0)

    angle = amount(_ROTATE, math.radians(_ROTATE_DEGREES))
    cos, sin = torch.cos(angle), torch.sin(angle)
    # affine_grid's theta maps output to input coordinates in [-1, 1] (a side spans 2)
    shift_x = amount(_TRANSLATE_X, 2 * _TRANSLATE).clamp_(-2 * _TRANSLATE_MAX, 2 * _TRANSLATE_MAX)
    shift_y = amount(_TRANSLATE_Y, 2 * _TRANSLATE).clamp_(-2 * _TRANSLATE_MAX, 2 * _TRANSLATE_MAX)
    # each image draws one op, so adding the ops' terms is composing nothing
    theta = torch.stack([
        torch.stack([cos, -sin + amount(_SHEAR_X, _SHEAR), shift_x], dim=1),
        torch.stack([sin + amount(_SHEAR_Y, _SHEAR), cos, shift_y], dim=1),
    ], dim=1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # zeros padding of (x - fill) is padding with fill
    warped = F.grid_sample(x - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False).add_(fill)
    moved = (op >= _ROTATE).view(-1, 1, 1, 1)
    # bilinear sampling at the identity is not bit-exact: images not warped keep their pixels
    return torch.where(moved, warped, x)


def _color(x: torch.Tensor, op: torch.Tensor, signed: torch.Tensor) -> torch.Tensor:
    """Autocontrast, brightness, color, contrast and sharpness as one per-image linear map.

    PIL's enhancers blend an image with a degenerate copy, ``f·x + (1 − f)·degenerate``:
    black (brightness), each pixel's grey (color), the image's mean grey (contrast), PIL's
    SMOOTH blur (sharpness: the 3x3 sum plus 4x the centre, over 13). Autocontrast maps
    each channel's range onto 0..255. Each is ``a·x + g·grey + s·box + d`` (box: the 3x3
    sum) with per-image weights, the identity's for an image that drew none of them, so
    the batch takes three fused multiply-adds whatever it drew.
    """
    b = len(x)
    factor = (1.0 + signed * _ENHANCE).clamp_(min=_ENHANCE_MIN)
    blend = 1.0 - factor

    def weight(which: int, value: torch.Tensor) -> torch.Tensor:
        return torch.where(op == which, value, 0.0).view(b, 1, 1, 1)

    enhanced = ((op >= _BRIGHTNESS) & (op <= _SHARPNESS)).view(b, 1, 1, 1)
    # the luma weights as Python numbers: a tensor made from host data in the hot loop
    # would be a blocking copy to the device at every batch
    grey = x[:, 0:1] * _LUMA[0] + x[:, 1:2] * _LUMA[1] + x[:, 2:3] * _LUMA[2]
    box = _box3(x)
    scale = torch.where(enhanced, factor.view(b, 1, 1, 1), 1.0) + weight(_SHARPNESS, blend * 4.0 / 13.0)
    shift = weight(_CONTRAST, blend) * grey.mean(dim=(2, 3), keepdim=True)
    low = x.amin(dim=(2, 3), keepdim=True)
    span = x.amax(dim=(2, 3), keepdim=True) - low
    stretch = torch.where(span > 0, 255.0 / span.clamp(min=1e-6), 1.0)  # a flat channel stays as it is
    auto = (op == _AUTOCONTRAST).view(b, 1, 1, 1)
    scale = torch.where(auto, stretch, scale)
    shift = torch.where(auto, torch.where(span > 0, -low * stretch, 0.0), shift)
    out = torch.addcmul(shift, x, scale)
    out.addcmul_(grey, weight(_COLOR, blend))
    out.addcmul_(box, weight(_SHARPNESS, blend / 13.0))
    return out.clamp_(0.0, 255.0)


def _box3(x: torch.Tensor) -> torch.Tensor:
    """The sum over each pixel's 3x3 neighbourhood (edges replicated), as two separable passes of slices.

    Several times faster on a CPU than ``avg_pool2d`` with stride 1, whose kernel is slow there.
    """
    p = F.pad(x, (1, 1, 1, 1), mode="replicate")
    rows = p[:, :, :-2] + p[:, :, 1:-1] + p[:, :, 2:]
    return rows[..., :-2] + rows[..., 1:-1] + rows[..., 2:]


def _solarize(x: torch.Tensor, chosen: torch.Tensor, strength: float) -> torch.Tensor:
    """Invert the pixels at or above a threshold that falls from 256 as the magnitude rises."""
    # an image that did not draw solarize gets a threshold no pixel reaches
    threshold = torch.where(chosen, 256.0 * max(0.0, 1.0 - strength), math.inf).view(-1, 1, 1, 1)
    return torch.where(x >= threshold, 255.0 - x, x)


def _posterize(x: torch.Tensor, chosen: torch.Tensor, strength: float) -> torch.Tensor:
    """Keep the top bits of each value: 8 at magnitude 0, 4 at 10, never fewer than 1."""
    bits = min(8, max(1, round(8 - _POSTERIZE_BITS * strength)))
    step = float(2 ** (8 - bits))
    # step is a power of 2: multiplying by its inverse is exact, and cheaper than a division
    return torch.where(chosen.view(-1, 1, 1, 1), torch.floor(x * (1.0 / step)).mul_(step), x)
