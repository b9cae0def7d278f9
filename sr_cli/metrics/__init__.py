"""Image-quality metrics as papers report them: PSNR, SSIM, NIQE, Ma (NRQM) and PI.

Every function here is pure (no printing, no exiting) and raises the typed errors of
:mod:`sr_cli.errors`. Pixel values are on the 0..255 scale in float64 unless stated otherwise.
"""

from sr_cli.metrics.color import rgb_to_y, to_channels
from sr_cli.metrics.psnr import psnr
from sr_cli.metrics.ssim import ssim

__all__ = ["psnr", "rgb_to_y", "ssim", "to_channels"]
