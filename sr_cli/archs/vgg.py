"""VGG19 feature extractor for perceptual losses (not an entry of the generator registry).

The layers and their parameter keys follow torchvision's ``vgg19().features`` (``features.0``
= conv1_1, ``features.2`` = conv1_2, ... ``features.34`` = conv5_4), so torchvision's
``vgg19-dcbb9e9d.pth`` (or a safetensors conversion of it) loads directly; classifier keys are
ignored. Without ImageNet weights, :func:`load_vgg19` can build a fixed-seed randomly
initialised VGG19 (random deep networks still work as a generic perceptual loss; Liu et al.,
"Generic Perceptual Loss for Modeling Structured Output Dependencies", CVPR 2021).

Layer names: ``conv{i}_{j}`` (output of the convolution, i.e. *before* ReLU, as ESRGAN and
Real-ESRGAN use), ``relu{i}_{j}`` (after ReLU, as SRGAN's phi_i,j) and ``pool{i}``.
Input: ``(B, 3, H, W)`` RGB in [0, 1]; ImageNet normalisation
``(x - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]`` is applied inside.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from sr_cli.errors import ModelError, UsageError

__all__ = ["VGG19_LAYERS", "VGGFeatureExtractor", "load_vgg19"]

_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
        512, 512, 512, 512, "M"]


def _layer_names() -> list[str]:
    names: list[str] = []
    block, conv = 1, 1
    for v in _CFG:
        if v == "M":
            names.append(f"pool{block}")
            block, conv = block + 1, 1
        else:
            names += [f"conv{block}_{conv}", f"relu{block}_{conv}"]
            conv += 1
    return names


VGG19_LAYERS: tuple[str, ...] = tuple(_layer_names())
"""All 37 layer names in order; index = torchvision ``features`` index."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class VGGFeatureExtractor(nn.Module):
    """Frozen VGG19 returning the features of the requested layers.

    ``forward(x: (B,3,H,W) in [0,1]) -> dict[layer name, (B, C_l, H_l, W_l)]``.
    Only the layers up to the deepest requested one are kept.
    """

    def __init__(self, layers: Iterable[str]) -> None:
        super().__init__()
        self.layers = list(layers)
        if not self.layers:
            raise UsageError("perceptual loss needs at least one VGG19 layer")
        unknown = [n for n in self.layers if n not in VGG19_LAYERS]
        if unknown:
            raise UsageError(
                f"unknown VGG19 layer(s) {', '.join(unknown)} (use conv1_1 .. conv5_4, "
                "relu1_1 .. relu5_4, pool1 .. pool5)"
            )
        last = max(VGG19_LAYERS.index(n) for n in self.layers)
        mods: list[nn.Module] = []
        cin = 3
        for v in _CFG:
            if v == "M":
                mods.append(nn.MaxPool2d(2, 2))
            else:
                assert isinstance(v, int)
                mods += [nn.Conv2d(cin, v, 3, 1, 1), nn.ReLU(inplace=False)]
                cin = v
        mods = mods[: last + 1]
        self.features = nn.Sequential(*mods)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> VGGFeatureExtractor:  # always frozen, eval mode
        return super().train(False)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.ndim != 4 or x.shape[1] != 3:
            raise UsageError(f"VGG19 features need (B, 3, H, W) RGB input, got {tuple(x.shape)}")
        mean: torch.Tensor = self.mean  # type: ignore[assignment]
        std: torch.Tensor = self.std  # type: ignore[assignment]
        h = (x - mean) / std
        out: dict[str, torch.Tensor] = {}
        wanted = set(self.layers)
        for name, mod in zip(VGG19_LAYERS, self.features, strict=False):
            h = mod(h)
            if name in wanted:
                out[name] = h
        return out


def _random_init(net: VGGFeatureExtractor, seed: int) -> None:
    """torchvision's init (Kaiming normal, fan_out, ReLU gain; zero bias), seeded generator."""
    g = torch.Generator().manual_seed(seed)
    for mod in net.features:
        if isinstance(mod, nn.Conv2d):
            fan_out = mod.out_channels * mod.kernel_size[0] * mod.kernel_size[1]
            with torch.no_grad():
                std = math.sqrt(2.0 / fan_out)
                mod.weight.copy_(torch.randn(mod.weight.shape, generator=g) * std)
                assert mod.bias is not None
                mod.bias.zero_()


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise ModelError(f"--vgg-weights {str(path)!r}: no such file")
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
            inner = obj.get("state_dict", obj) if isinstance(obj, dict) else None
            if not isinstance(inner, dict):
                raise ModelError(f"{path}: not a state dict")
            sd = inner
    except ModelError:
        raise
    except Exception as exc:  # noqa: BLE001 - pickle/safetensors errors come in many types
        raise ModelError(
            f"{path}: unreadable VGG19 weights ({type(exc).__name__}: {exc})"
        ) from None
    return {k.removeprefix("module."): v for k, v in sd.items() if isinstance(v, torch.Tensor)}


def load_vgg19(
    layers: Iterable[str], weights: str | os.PathLike[str] | None, *, random_seed: int = 0
) -> VGGFeatureExtractor:
    """A frozen VGG19 feature extractor for ``layers``.

    Args:
        layers: layer names (see :data:`VGG19_LAYERS`).
        weights: torchvision ``vgg19`` ``.pth`` (loaded with ``weights_only=True``) or a
            safetensors file with the same keys (``features.N.weight`` / ``.bias``); None builds
            a fixed-seed random VGG19 instead.
        random_seed: seed of the random initialisation when ``weights`` is None.
    """
    net = VGGFeatureExtractor(layers)
    if weights is None:
        _random_init(net, random_seed)
        return net
    sd = _read_state_dict(Path(weights))
    own = net.state_dict()
    missing = [k for k in own if k not in sd]
    if missing:
        raise ModelError(
            f"{weights}: not torchvision VGG19 weights (missing {', '.join(missing[:3])}"
            f"{' ...' if len(missing) > 3 else ''})"
        )
    bad = [k for k in own if tuple(sd[k].shape) != tuple(own[k].shape)]
    if bad:
        raise ModelError(f"{weights}: not VGG19 weights (shape mismatch at {bad[0]})")
    net.load_state_dict({k: sd[k].float() for k in own})
    return net
