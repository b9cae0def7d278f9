"""RRDBNet, the ESRGAN / Real-ESRGAN generator (Wang et al., 2018), BasicSR layout and keys.

``conv_first`` -> ``num_block`` Residual-in-Residual Dense Blocks (three 5-conv dense blocks
each, growth ``num_grow_ch``, LeakyReLU 0.2, residual scaling 0.2) -> ``conv_body`` (+ skip) ->
two nearest x2 up-samplings each followed by a 3x3 conv (``conv_up1``, ``conv_up2``) ->
``conv_hr`` -> ``conv_last``. Scale 2 and 1 networks pixel-unshuffle the input first (by 2 or 4,
so ``conv_first`` sees 4x or 16x the channels), as Real-ESRGAN does; the internal x4 then gives
x2 / x1. Dense-block convolutions are initialised with Kaiming-normal weights times 0.1.

``upsample_stages`` (default None: the layout above) builds the original ESRGAN layout used by
community x1/x2/x8 files instead: no pixel-unshuffle, and that many nearest-x2 + conv stages
(``conv_up1..conv_upN``; 0 for x1, 1 for x2, 3 for x8), so ``scale == 2 ** upsample_stages``.

Three key schemes load (see :func:`canonical_keys`): BasicSR / Real-ESRGAN (canonical), the
original ESRGAN repository (``RRDB_trunk.N.RDBK.convJ``, ``trunk_conv``, ``upconv1``, ``HRconv``)
and the old ESRGAN ``model.N`` layout (``model.1.sub.N.RDBK.convJ.0``).
"""

from __future__ import annotations

import math
import re
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sr_cli.archs.base import ArchSpec, StateDict
from sr_cli.archs.facts import DESCRIPTIONS
from sr_cli.archs.facts import RRDBNET_DEFAULTS as DEFAULTS
from sr_cli.archs.facts import RRDBNET_UNSHUFFLE as UNSHUFFLE
from sr_cli.archs.facts import describe_rrdbnet as describe


@torch.no_grad()
def default_init_weights(module: nn.Module, scale: float = 1.0) -> None:
    """BasicSR's init: Kaiming-normal conv weights times ``scale``, zero biases."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight)
            m.weight.mul_(scale)
            if m.bias is not None:
                m.bias.zero_()


class ResidualDenseBlock(nn.Module):
    """Five densely connected 3x3 convs; ``out = x + 0.2 * conv5([x, x1..x4])``."""

    def __init__(self, num_feat: int = 64, num_grow_ch: int = 32) -> None:
        super().__init__()
        g = num_grow_ch
        self.conv1 = nn.Conv2d(num_feat, g, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat + g, g, 3, 1, 1)
        self.conv3 = nn.Conv2d(num_feat + 2 * g, g, 3, 1, 1)
        self.conv4 = nn.Conv2d(num_feat + 3 * g, g, 3, 1, 1)
        self.conv5 = nn.Conv2d(num_feat + 4 * g, num_feat, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)
        default_init_weights(self, 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.lrelu(self.conv1(x))
        x2 = self.lrelu(self.conv2(torch.cat((x, x1), 1)))
        x3 = self.lrelu(self.conv3(torch.cat((x, x1, x2), 1)))
        x4 = self.lrelu(self.conv4(torch.cat((x, x1, x2, x3), 1)))
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        return x5 * 0.2 + x


class RRDB(nn.Module):
    """Residual in Residual Dense Block: ``out = x + 0.2 * rdb3(rdb2(rdb1(x)))``."""

    def __init__(self, num_feat: int, num_grow_ch: int = 32) -> None:
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


class RRDBNet(nn.Module):
    """``forward(x)``: ``(B, num_in_ch, h, w)`` in [0, 1] -> ``(B, num_out_ch, h*s, w*s)``.

    For scale 2 (1) ``h`` and ``w`` must be multiples of 2 (4): the input is pixel-unshuffled.
    """

    def __init__(
        self,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        scale: int = 4,
        num_feat: int = 64,
        num_block: int = 23,
        num_grow_ch: int = 32,
        upsample_stages: int | None = None,
    ) -> None:
        super().__init__()
        if upsample_stages is None:
            if scale not in UNSHUFFLE:
                raise ValueError(f"RRDBNet supports scale 1, 2 or 4, got {scale} (x8: give "
                                 "upsample_stages=3)")
            self.unshuffle, self.stages = UNSHUFFLE[scale], 2
        else:
            if upsample_stages not in (0, 1, 2, 3) or scale != 2**upsample_stages:
                raise ValueError(f"RRDBNet with upsample_stages={upsample_stages} needs "
                                 f"scale 2**stages (stages 0..3), got scale {scale}")
            self.unshuffle, self.stages = 1, upsample_stages
        self.scale = scale
        self.num_grow_ch = num_grow_ch
        self.conv_first = nn.Conv2d(num_in_ch * self.unshuffle**2, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*[RRDB(num_feat, num_grow_ch) for _ in range(num_block)])
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        for k in range(1, self.stages + 1):
            setattr(self, f"conv_up{k}", nn.Conv2d(num_feat, num_feat, 3, 1, 1))
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self._head(x)
        return self._upsample(feat + self.conv_body(self.body(feat)))

    def _upsample(self, feat: torch.Tensor) -> torch.Tensor:
        """Nearest x2 + conv + LeakyReLU per stage, then conv_hr and conv_last."""
        for k in range(1, self.stages + 1):
            up = F.interpolate(feat, scale_factor=2.0, mode="nearest")
            feat = self.lrelu(getattr(self, f"conv_up{k}")(up))
        return self.conv_last(self.lrelu(self.conv_hr(feat)))  # type: ignore[no-any-return]

    def staged(self, per: str = "rdb") -> Any:
        """This network as exact stages for the engine's staged tiling
        (:class:`sr_cli.infer.staged.StagedNet`): ``conv_first`` (after the unshuffle), the
        trunk per Residual Dense Block (``per="rdb"``: radius 5 feature px, RRDB residual by
        snapshot) or per RRDB (``"rrdb"``: radius 15), and the tail: ``conv_first`` again on
        its input tile (the skip, not held as a map) + ``conv_body`` + upsampling (radius 3
        feature px: 1 + 1/2 + 1/4 + ... at the growing resolutions, rounded up, + 1 for
        ``conv_body`` or for ``conv_first``). The arithmetic is the forward's, operation for
        operation (``conv_first`` on a tile equals it on the image where the tail reads it)."""
        from sr_cli.infer.staged import Stage, StagedNet

        if per not in ("rdb", "rrdb"):
            raise ValueError(f"per must be 'rdb' or 'rrdb', got {per!r}")
        stages: list[Stage] = []
        for block in self.body:
            assert isinstance(block, RRDB)  # noqa: S101 - built by __init__
            if per == "rrdb":
                stages.append(Stage(block, 15))
            else:
                stages += [Stage(block.rdb1, 5, save=True), Stage(block.rdb2, 5),
                           Stage(block.rdb3, 5, residual=0.2)]
        feat = int(self.conv_first.out_channels)
        grow = self.num_grow_ch if len(self.body) else 0
        # input tile + x1..x4 + the widest concat + conv5 output + its scaled copy (+ an
        # RRDB's two held block outputs)
        work = 4 * feat + 8 * grow + (2 * feat if per == "rrdb" else 0)
        # backwards from an output pixel, in feature px: conv_last and conv_hr (1 px each at
        # 2**stages the resolution), then per stage its conv (1 px at 2**k) and the nearest
        # upsampling (rounds the reach out to the coarser grid), then conv_body (1 px)
        reach = 2 * 0.5**self.stages
        for k in range(self.stages, 0, -1):
            reach = math.ceil((reach + 0.5**k) * 2 ** (k - 1)) / 2 ** (k - 1)
        tail = math.ceil(reach) + 1  # 3 for every layout; conv_first (the skip) as conv_body
        return StagedNet(stride=self.unshuffle, channels=feat, head=self._head,
                         stages=stages, tail=self._tail, tail_radius=tail,
                         work_channels=work, in_channels=int(self.conv_first.in_channels))

    def _head(self, x: torch.Tensor) -> torch.Tensor:
        feat = F.pixel_unshuffle(x, self.unshuffle) if self.unshuffle > 1 else x
        return self.conv_first(feat)  # type: ignore[no-any-return]

    def _tail(self, x: torch.Tensor, trunk: torch.Tensor) -> torch.Tensor:
        return self._upsample(self._head(x) + self.conv_body(trunk))


_ORIG = [
    (re.compile(r"^RRDB_trunk\.(\d+)\.RDB(\d)\.conv(\d)\.(weight|bias)$"),
     r"body.\1.rdb\2.conv\3.\4"),
    (re.compile(r"^trunk_conv\.(weight|bias)$"), r"conv_body.\1"),
    (re.compile(r"^upconv1\.(weight|bias)$"), r"conv_up1.\1"),
    (re.compile(r"^upconv2\.(weight|bias)$"), r"conv_up2.\1"),
    (re.compile(r"^upconv3\.(weight|bias)$"), r"conv_up3.\1"),
    (re.compile(r"^HRconv\.(weight|bias)$"), r"conv_hr.\1"),
]
_OLD_SUB = re.compile(r"^model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.(weight|bias)$")
_OLD_BODY = re.compile(r"^model\.1\.sub\.(\d+)\.(weight|bias)$")
_OLD = re.compile(r"^model\.(\d+)\.(weight|bias)$")


def _old_top(stages: int) -> dict[str, str]:
    """``model.N`` index -> module of the old layout with ``stages`` upsampling stages:
    ``0`` conv_first, ``1`` the trunk, then (upsample, conv_upK, lrelu) per stage, then
    conv_hr, lrelu, conv_last (x4: 3, 6, 8, 10)."""
    top = {"0": "conv_first"}
    top.update({str(3 * k): f"conv_up{k}" for k in range(1, stages + 1)})
    top[str(3 * stages + 2)] = "conv_hr"
    top[str(3 * stages + 4)] = "conv_last"
    return top


def canonical_keys(sd: StateDict) -> dict[str, torch.Tensor]:
    """Rename the original-ESRGAN and old ``model.N`` key schemes to BasicSR keys.

    Returns the input (as a dict) unchanged when it is in neither scheme.
    """
    keys = list(sd)
    if any(k.startswith("RRDB_trunk.") for k in keys):
        out: dict[str, torch.Tensor] = {}
        for k, v in sd.items():
            for pat, rep in _ORIG:
                if pat.match(k):
                    k = pat.sub(rep, k)
                    break
            out[k] = v
        return out
    if any(_OLD_SUB.match(k) for k in keys):
        last = max((int(m[1]) for k in keys if (m := _OLD.match(k))), default=10)
        top = _old_top(max(0, (last - 4) // 3))
        out = {}
        for k, v in sd.items():
            if m := _OLD_SUB.match(k):
                out[f"body.{m[1]}.rdb{m[2]}.conv{m[3]}.{m[4]}"] = v
            elif m := _OLD_BODY.match(k):
                out[f"conv_body.{m[2]}"] = v  # model.1.sub.<num_block>: the trunk conv
            elif (m := _OLD.match(k)) and m[1] in top:
                out[f"{top[m[1]]}.{m[2]}"] = v
            else:
                out[k] = v  # unknown: left as is, so loading reports it
        return out
    return dict(sd)


_BLOCK = re.compile(r"^body\.(\d+)\.rdb1\.conv1\.weight$")


def detect(sd: StateDict) -> dict[str, Any] | None:
    """Recognise canonical RRDBNet keys. Two upsampling convs: the Real-ESRGAN layout, scale
    from the ``conv_first`` in/out-channel ratio (pixel-unshuffle); 0, 1 or 3 of them (and no
    unshuffle): the original ESRGAN layout of x1/x2/x8 files (``upsample_stages``)."""
    need = ("conv_first.weight", "conv_body.weight", "conv_hr.weight", "conv_last.weight",
            "body.0.rdb1.conv1.weight")
    if not all(k in sd for k in need):
        return None
    stages = 0
    while f"conv_up{stages + 1}.weight" in sd:
        stages += 1
    if stages > 3 or any(k.startswith(f"conv_up{stages + 2}.") for k in sd):
        return None
    first, last = sd["conv_first.weight"], sd["conv_last.weight"]
    out_ch = int(last.shape[0])
    ratio, rem = divmod(int(first.shape[1]), out_ch)
    scales = {1: 4, 4: 2, 16: 1}
    if rem or ratio not in scales or (stages != 2 and ratio != 1):
        return None
    scale = scales[ratio] if stages == 2 else 2**stages
    blocks = [int(m.group(1)) for k in sd if (m := _BLOCK.match(k))]
    return {
        "num_in_ch": out_ch,
        "num_out_ch": out_ch,
        "upsample_stages": None if stages == 2 else stages,
        "scale": scale,
        "num_feat": int(first.shape[0]),
        "num_block": max(blocks) + 1,
        "num_grow_ch": int(sd["body.0.rdb1.conv1.weight"].shape[0]),
    }


SPEC = ArchSpec(
    name="rrdbnet",
    defaults=DEFAULTS,
    factory=RRDBNet,
    describe=describe,
    detect=detect,
    canonical_keys=canonical_keys,
    description=DESCRIPTIONS["rrdbnet"],
    extra={"tiny": {"num_feat": 8, "num_block": 2, "num_grow_ch": 4, "scale": 2},
           "scales": (1, 2, 4, 8)},
)
