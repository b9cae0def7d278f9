"""Facts about the architectures that need no torch: ids and one-line descriptions.

``sr models list`` and ``--help`` read these without importing the networks; each
architecture module's :class:`~sr_cli.archs.base.ArchSpec` takes its description from here.
"""

from __future__ import annotations

DESCRIPTIONS: dict[str, str] = {
    "srcnn": "SRCNN 9-5-5 (Dong et al. 2014), bicubic pre-upsampling, Y or RGB",
    "srresnet": "SRResNet / SRGAN generator (Ledig et al. 2017), BN + PReLU, sub-pixel x2/x3",
    "rrdbnet": "RRDBNet (ESRGAN / Real-ESRGAN generator), BasicSR layout, x1/x2/x4",
    "srvgg": "SRVGGNetCompact (Real-ESRGAN compact, e.g. realesr-animevideov3)",
    "bicubic": "MATLAB imresize bicubic (antialiased when shrinking), any scale",
    "lanczos": "MATLAB imresize Lanczos-3, any scale",
    "nearest": "nearest-neighbour interpolation, any scale",
}
"""Architecture id -> one line for ``sr models list`` / ``sr models info`` / docs."""
