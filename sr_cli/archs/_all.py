"""The explicit list of registered architectures (order is irrelevant; ids must be unique)."""

from __future__ import annotations

from sr_cli.archs import (
    baseline,
    dat,
    hat,
    omnisr,
    realcugan,
    rrdbnet,
    span,
    srcnn,
    srresnet,
    srvgg,
    swinir,
)
from sr_cli.archs.base import ArchSpec

SPECS: list[ArchSpec] = [
    srcnn.SPEC,
    srresnet.SPEC,
    rrdbnet.SPEC,
    srvgg.SPEC,
    span.SPEC,
    swinir.SPEC,
    realcugan.SPEC,
    omnisr.SPEC,
    hat.SPEC,
    dat.SPEC,
    *baseline.SPECS,
]
