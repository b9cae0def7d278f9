"""Degradations: blur kernels, resizing (incl. MATLAB imresize), noise, JPEG, sharpening, and the
bicubic / classical / Real-ESRGAN pipelines behind ``sr degrade``.

Submodules: :mod:`.resize`, :mod:`.kernels`, :mod:`.noise`, :mod:`.jpeg`, :mod:`.sharpen`,
:mod:`.config`, :mod:`.pipeline`.
"""

from sr_cli.degrade.resize import imresize, resize

__all__ = ["imresize", "resize"]
