"""The model zoo: names -> weights files, safe weight reading, architecture detection, saving.

Names. ``-m`` takes a zoo name or a path. Zoo folders, searched in this order (the first file of
a name wins): the repository's ``models/``, ``$SR_HOME/models`` (else ``~/.cache/sr/models``, or
``$XDG_CACHE_HOME/sr/models``), then each folder of ``SR_MODELS_PATH`` (``os.pathsep``-separated).
A zoo name is a ``*.safetensors`` file's stem. ``bicubic``, ``lanczos`` and ``nearest`` always
exist (non-learned); ``default`` is :func:`default_model_name`.

Files. ``.safetensors`` (the zoo format) carry ``__metadata__`` strings: ``arch``, ``hparams``
(JSON), ``scale``, ``in_channels``, ``context`` (measured tiling overlap of deep networks such as
RRDBNet, see :mod:`sr_cli.infer.context`), ``name``, ``recipe``, ``trained_steps``, ``data`` and
``scores`` (JSON, e.g. ``{"Set5": {"psnr_y": 30.5, "ssim_y": 0.86}}``). When ``arch``/``hparams``
are present they are used; otherwise the architecture is detected from the tensors.
ncnn models (``model.param``, or the binary ``model.param.bin``, with ``model.bin`` beside it)
load through :mod:`sr_cli.ncnn`.
``.pth``/``.pt`` checkpoints load only through ``torch.load(weights_only=True)``: pickles that
need code execution are refused, never run. Wrappers ``params_ema`` (preferred), ``params`` and
``state_dict`` are unwrapped and ``module.`` prefixes stripped.

Default model: a ``models/DEFAULT`` file holding a zoo name wins; otherwise the learned model in
the repository's ``models/`` with the highest Set5 PSNR-Y in its ``scores`` (among x4 models when
there are any, else among all); while there is none it is ``bicubic``.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sr_cli
from sr_cli.archs.facts import DESCRIPTIONS
from sr_cli.errors import ModelError, UsageError
from sr_cli.io.atomic import atomic_write_bytes, note_input

if TYPE_CHECKING:
    from torch import Tensor, nn

    from sr_cli.archs import Descriptor

# torch and the architectures load inside the functions that build or read networks: listing
# the zoo and reading safetensors headers (`sr models list`, `--help`) stays free of torch.

BASELINES = ("bicubic", "lanczos", "nearest")
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".ckpt", ".bin", ".param")
_WRAPPERS = ("params_ema", "params", "state_dict")


@dataclass
class LoadedModel:
    """A network ready for inference: eval mode, fp32, on the CPU."""

    name: str
    net: nn.Module
    desc: Descriptor
    metadata: dict[str, str] = field(default_factory=dict)
    source: Path | None = None


@dataclass
class ModelHeader:
    """A model described without loading it (see :func:`peek_model`): no network, no torch."""

    name: str
    desc: Descriptor
    params: int
    metadata: dict[str, str] = field(default_factory=dict)
    source: Path | None = None


@dataclass
class ZooEntry:
    """One row of ``sr models list``."""

    name: str
    arch: str
    scale: float
    params: int
    file: Path | None
    scores: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    learned: bool = True
    default: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "arch": self.arch,
            "scale": scale_json(self.scale),
            "params": self.params,
            "file": str(self.file) if self.file else None,
            "scores": self.scores,
            "description": self.description,
            "learned": self.learned,
            "default": self.default,
        }


def scale_json(scale: float | int | None) -> float | None:
    """How every JSON output writes a scale: a float (``4.0``; the same type whether the value
    came from a model, a video or ``-s``), or null for the any-scale baselines (native 0)."""
    return float(scale) if scale else None


# --------------------------------------------------------------------------- folders and names


def repo_models_dir() -> Path:
    """The repository's ``models/`` folder (shipped, curated models)."""
    return Path(sr_cli.__file__).resolve().parents[1] / "models"


def user_models_dir() -> Path:
    """``$SR_HOME/models``, else ``$XDG_CACHE_HOME/sr/models`` or ``~/.cache/sr/models``."""
    home = os.environ.get("SR_HOME")
    if home:
        return Path(home).expanduser() / "models"
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser() / "sr" / "models"


def search_dirs() -> list[Path]:
    """Zoo folders in lookup order (existing or not)."""
    dirs = [repo_models_dir(), user_models_dir()]
    for part in os.environ.get("SR_MODELS_PATH", "").split(os.pathsep):
        if part.strip():
            dirs.append(Path(part.strip()).expanduser())
    seen: list[Path] = []
    for d in dirs:
        if d not in seen:
            seen.append(d)
    return seen


def _zoo_files() -> dict[str, Path]:
    """name -> file, first folder wins."""
    found: dict[str, Path] = {}
    for d in search_dirs():
        if not d.is_dir():
            continue
        for p in sorted(d.glob("*.safetensors")):
            found.setdefault(p.stem, p)
    return found


# --------------------------------------------------------------------------- reading weights


def _sniff(path: Path, head: bytes) -> str:
    if path.suffix.lower() == ".safetensors":
        return "safetensors"
    if path.suffix.lower() in (".pth", ".pt", ".ckpt", ".bin"):
        return "torch"
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":
        return "torch"
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"
    raise ModelError(f"{path}: not a weights file (expected .safetensors or .pth)")


def _read_safetensors(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:  # type: ignore[no-untyped-call]
            meta = dict(f.metadata() or {})
            # each tensor in its own (64-byte aligned) allocation: views into the file's
            # buffer sit at arbitrary offsets, and oneDNN rounds some convolutions (strided,
            # transposed) differently for unaligned weights, so a reload would not be bit-exact
            sd = {k: f.get_tensor(k).clone() for k in f.keys()}  # noqa: SIM118
    except Exception as exc:  # SafetensorError, OSError on truncation, ...
        raise ModelError(f"{path}: corrupt or truncated safetensors file ({_short(exc)})") from None
    return sd, {str(k): str(v) for k, v in meta.items()}


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:160]


def _read_torch(path: Path) -> dict[str, Tensor]:
    import pickle
    import zipfile

    import torch

    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ModelError(_pickle_refusal(path, exc)) from None
    except (RuntimeError, EOFError, ValueError, zipfile.BadZipFile, struct.error, KeyError,
            AttributeError, TypeError) as exc:
        raise ModelError(f"{path}: unreadable PyTorch checkpoint ({_short(exc)})") from None
    return _unwrap(obj, path)


def _pickle_refusal(path: Path, exc: BaseException) -> str:
    """One line for a checkpoint that ``torch.load(weights_only=True)`` refused.

    A pickle naming a global outside torch's allow-list (``os.system``, a custom class...) is
    reported as unsafe; it was never executed. Anything else is not a readable checkpoint.
    """
    text = str(exc)
    found = re.search(r"(?:unsupported GLOBAL|Unsupported global: GLOBAL) ([\w.]+)", text,
                      re.IGNORECASE)
    if found:
        return (f"{path}: refused: unsafe pickle (it needs {found.group(1)}); only plain "
                "tensor checkpoints load, and nothing in the file was executed")
    detail = re.search(r"(Unsupported operand \d+|invalid load key[^\n]*)", text)
    why = f" ({detail.group(1).strip().rstrip('.')})" if detail else ""
    return f"{path}: not a readable PyTorch checkpoint{why}"


def _unwrap(obj: Any, path: Path) -> dict[str, Tensor]:
    """Unwrap ``params_ema`` / ``params`` / ``state_dict`` and strip ``module.`` prefixes."""
    from torch import Tensor

    for _ in range(3):
        if isinstance(obj, Mapping) and not _all_tensors(obj):
            for key in _WRAPPERS:
                if key in obj and isinstance(obj[key], Mapping):
                    obj = obj[key]
                    break
            else:
                break
    if not isinstance(obj, Mapping) or not obj:
        raise ModelError(f"{path}: no state dict found (expected tensors, or params_ema/params/"
                         "state_dict)")
    sd = {str(k): v for k, v in obj.items() if isinstance(v, Tensor)}
    if not sd:
        raise ModelError(f"{path}: no tensors in the checkpoint")
    for key in _MARKERS:  # presence is what counts; keep it whatever its value
        if key in obj and key not in sd:
            import torch

            sd[key] = torch.zeros(1)
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in sd.items()}


_MARKERS = ("pro", "no_norm")
"""Keys whose presence marks a variant (Real-CUGAN's ``pro``, SPAN's ``no_norm``): kept as a
tensor even when a checkpoint stores a plain Python value under them."""


def _all_tensors(obj: Mapping[Any, Any]) -> bool:
    from torch import Tensor

    return all(isinstance(v, Tensor) for v in obj.values())


def read_weights(path: str | os.PathLike[str]) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Read a weights file safely: ``(state_dict, metadata)``.

    ``.safetensors`` -> tensors and ``__metadata__``; ``.pth``/``.pt`` -> ``torch.load`` with
    ``weights_only=True`` (metadata ``{}``); an ncnn ``.param`` or ``.param.bin`` (with its
    ``.bin`` beside it, or that ``.bin``) -> the graph mapped onto RRDBNet/SRVGGNetCompact by
    :mod:`sr_cli.ncnn`, with ``arch``/``hparams`` metadata. Raises ModelError on missing,
    corrupt, truncated or unsafe files.
    """
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"{p}: no such weights file")
    try:
        with open(p, "rb") as fh:
            head = fh.read(16)
    except OSError as exc:
        raise ModelError(f"{p}: cannot read ({exc.strerror})") from None
    note_input(p)  # the output policy: no output of this run may replace it
    ncnn_param = _ncnn_param(p, head)
    if ncnn_param is not None:
        from sr_cli.ncnn import read_ncnn_weights

        return read_ncnn_weights(ncnn_param)
    if _sniff(p, head) == "safetensors":
        return _read_safetensors(p)
    return _read_torch(p), {}


def _ncnn_param(path: Path, head: bytes) -> Path | None:
    """The graph of an ncnn model: ``path`` itself (a text ``.param`` or a binary
    ``.param.bin``), or the ``.param`` (else ``.param.bin``) beside a ``.bin`` that is not a
    PyTorch file; None for other files."""
    if path.suffix.lower() == ".param" or path.name.lower().endswith(".param.bin"):
        return path
    if path.suffix.lower() == ".bin" and head[:4] != b"PK\x03\x04" and head[:1] != b"\x80":
        for beside in (path.with_suffix(".param"), path.with_name(path.stem + ".param.bin")):
            if beside.is_file():
                return beside
    return None


# --------------------------------------------------------------------------- architectures


def detect_arch(state_dict: Mapping[str, Tensor]) -> tuple[str, dict[str, Any]]:
    """Recognise the architecture of a state dict (any supported key scheme).

    Returns ``(arch id, hparams)``; raises ModelError when no registered architecture matches.
    """
    from sr_cli.archs import all_specs

    sd = _strip_module(state_dict)
    for spec in all_specs():
        try:
            hp = spec.detect(spec.canonical_keys(sd))
        except (KeyError, IndexError, ValueError):
            hp = None
        if hp is not None:
            return spec.name, spec.hparams(**hp)
    sample = ", ".join(list(sd)[:3])
    raise ModelError(f"no known architecture matches these weights (keys: {sample}, ...)")


def _strip_module(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in sd.items()}


def _hparams_from_metadata(meta: Mapping[str, str], path: Path) -> tuple[str, dict[str, Any]]:
    from sr_cli.archs import get_arch

    arch = meta["arch"]
    spec = get_arch(arch)  # ModelError if unknown
    try:
        hp = json.loads(meta["hparams"])
    except (json.JSONDecodeError, KeyError):
        raise ModelError(f"{path}: metadata 'hparams' is not valid JSON") from None
    if not isinstance(hp, dict):
        raise ModelError(f"{path}: metadata 'hparams' must be a JSON object")
    return spec.name, spec.hparams(**hp)


def build_loaded(
    state_dict: Mapping[str, Tensor],
    metadata: Mapping[str, str] | None = None,
    *,
    name: str = "",
    source: Path | None = None,
    scale: float | None = None,
) -> LoadedModel:
    """Build the network for a state dict (metadata arch/hparams when present, else detection),
    load the weights strictly and return it in eval mode, fp32, on the CPU."""
    import torch

    from sr_cli.archs import get_arch

    meta = dict(metadata or {})
    where = source or Path(name or "weights")
    if scale is not None and not (math.isfinite(scale) and scale > 0):
        raise UsageError(f"scale must be a positive number, got {scale:g}")
    bad = [k for k, v in state_dict.items()
           if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
        raise ModelError(f"{where}: weights contain NaN or infinite values ({bad[0]}{more})")
    if "arch" in meta and "hparams" in meta:
        arch, hp = _hparams_from_metadata(meta, where)
    else:
        arch, hp = detect_arch(state_dict)
        spec = get_arch(arch)
        if scale is not None and not spec.extra.get("scale_in_weights", True):
            hp["scale"] = max(1, int(scale))  # SRCNN: not stored in the weights
        elif "scale" in meta and not spec.extra.get("scale_in_weights", True):
            try:
                hp["scale"] = int(float(meta["scale"]))
            except ValueError:
                raise ModelError(f"{where}: metadata 'scale' is not a number") from None
    spec = get_arch(arch)
    try:  # sanity of the values and the size, before anything is allocated
        hp = spec.hparams(**hp)
        spec.check_size(hp)
    except ModelError as exc:
        raise ModelError(f"{where}: {exc.message}") from None
    sd = spec.canonical_keys(_strip_module(state_dict))
    try:
        net = instantiate(spec.factory, hp, sd)
    except (TypeError, ValueError) as exc:
        raise ModelError(f"{where}: cannot build {arch} with {hp}: {exc}") from None
    except RuntimeError as exc:
        raise ModelError(f"{where}: weights do not fit {arch}: {_mismatch(exc)}") from None
    net.float().eval()
    for p in net.parameters():
        p.requires_grad_(False)
    from sr_cli.infer.context import context_from_metadata

    return LoadedModel(name=name or (source.stem if source else arch), net=net,
                       desc=context_from_metadata(spec.describe(hp), meta), metadata=meta,
                       source=source)


def instantiate(factory: Any, hp: Mapping[str, Any], sd: Mapping[str, Tensor]) -> nn.Module:
    """``factory(**hp)`` with ``sd`` loaded strictly, without paying for the random init.

    The network is built on the ``meta`` device and the weights assigned (a 23-block RRDBNet's
    Kaiming init costs seconds); a network with state outside its state dict (a non-persistent
    buffer) is built normally instead. Raises TypeError/ValueError (bad hparams) or RuntimeError
    (weights that do not fit).
    """
    from sr_cli.archs.base import meta_build

    with meta_build():
        net = factory(**hp)
    net.load_state_dict(sd, strict=True, assign=True)
    if any(t.is_meta for t in (*net.parameters(), *net.buffers())):
        net = factory(**hp)  # something was not in the state dict: build it for real
        net.load_state_dict(sd, strict=True)
    return net


def _mismatch(exc: RuntimeError) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    detail = " ".join(lines[1:3]) if len(lines) > 1 else lines[0] if lines else "mismatch"
    return detail[:240]


# --------------------------------------------------------------------------- public API


def load_model(name_or_path: str, *, scale: float | None = None) -> LoadedModel:
    """Resolve a zoo name, ``default``, a baseline or a path, and load it.

    ``scale`` sets the factor of the non-learned baselines (default 4), selects a default model of
    that native scale for ``default``, and gives the factor of an SRCNN checkpoint without
    metadata. Learned models keep their native scale (the engine resizes when asked otherwise).
    Raises ModelError for unknown names (with close matches) and bad files.
    """
    from sr_cli.archs import get_arch

    name = str(name_or_path).strip()
    if name.lower() == "default":
        name = default_model_name(scale)
    if name.lower() in BASELINES:
        spec = get_arch(name.lower())
        s = float(scale) if scale is not None else float(spec.defaults["scale"])
        if not (math.isfinite(s) and s > 0):
            raise ModelError(f"{name}: scale must be a positive number, got {scale}")
        hp = spec.hparams(scale=s)
        return LoadedModel(name=spec.name, net=spec.create(hp).eval(), desc=spec.describe(hp),
                           metadata={}, source=None)
    path = Path(name).expanduser()
    if path.is_dir() and (path / "model.safetensors").is_file():  # an `sr train` run folder
        path = path / "model.safetensors"
    if path.is_file():
        return _load_file(path, None, scale)
    files = _zoo_files()
    key = name[: -len(".safetensors")] if name.endswith(".safetensors") else name
    if key in files:
        return _load_file(files[key], key, scale)
    if path.suffix.lower() in WEIGHT_SUFFIXES or os.sep in name or "/" in name:
        raise ModelError(f"{name}: no such weights file")
    official = _official_hint(name)
    if official:
        raise ModelError(official)
    known = sorted(set(files) | set(BASELINES))
    import difflib

    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ModelError(f"unknown model {name!r}{hint} (see `sr models list`)")


def _official_hint(name: str) -> str | None:
    """One line for an official model name that is not in the cache yet: the command that
    fetches it (and how to import a copy downloaded by hand); None for other names."""
    from sr_cli import fetch

    try:
        entry = fetch.find_entry(name)
    except ModelError:
        return None
    if entry.url is None:
        return (f"{entry.name} is an official model that is not fetched yet and has no direct "
                f"address: download {entry.filename} by hand (see `sr models fetch --list`), "
                f"then run `sr models fetch {entry.name} --file {entry.filename}`")
    return (f"{entry.name} is an official model that is not fetched yet: run `sr models fetch "
            f"{entry.name}` (or, with a copy downloaded by hand, `sr models fetch {entry.name} "
            f"--file {entry.filename}`)")


def peek_model(name_or_path: str, *, header_only: bool = False) -> ModelHeader | None:
    """Describe a model without torch: a baseline, or (``header_only``) a ``.safetensors`` file
    from its header, whose metadata names the architecture and hyperparameters (zoo models).

    Returns None when the weights must be loaded to tell (``.pth`` files, files without that
    metadata, unknown hyperparameters, an incomplete file, unknown names): :func:`load_model`
    then gives the answer or the error. The header path does not check the weights (NaN,
    shapes); :func:`load_model` does.
    """
    from sr_cli.archs.facts import DEFAULTS, DESCRIBE, context_from_metadata

    name = str(name_or_path).strip()
    if name.lower() == "default":
        name = default_model_name()
    if name.lower() in BASELINES:
        b = name.lower()
        return ModelHeader(name=b, desc=DESCRIBE[b](dict(DEFAULTS[b])), params=0)
    if not header_only:
        return None
    path = Path(name).expanduser()
    key = None
    if not path.is_file():
        key = name[: -len(".safetensors")] if name.endswith(".safetensors") else name
        path = _zoo_files().get(key, path)
    if not path.is_file() or path.suffix.lower() != ".safetensors" or not _complete(path):
        return None
    meta, params = _header(path)
    arch = meta.get("arch", "").lower()
    try:
        hp = json.loads(meta["hparams"])
        if arch not in DESCRIBE or not isinstance(hp, dict) or set(hp) - set(DEFAULTS[arch]):
            return None
        desc = context_from_metadata(DESCRIBE[arch]({**DEFAULTS[arch], **hp}), meta)
    except (KeyError, ValueError, TypeError):
        return None
    return ModelHeader(name=key or meta.get("name") or path.stem, desc=desc, params=params,
                       metadata=meta, source=path)


def _complete(path: Path) -> bool:
    """True when a safetensors file is as long as its header says (not truncated)."""
    try:
        with open(path, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n)) if n <= 100_000_000 else None
        if not isinstance(header, dict):
            return False
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
        return path.stat().st_size == 8 + n + max(ends, default=0)
    except (OSError, ValueError, KeyError, TypeError, IndexError, struct.error):
        return False


def _load_file(path: Path, name: str | None, scale: float | None) -> LoadedModel:
    """Load a file; ``name`` is the zoo name, or None for a path (metadata name, else stem)."""
    sd, meta = read_weights(path)
    return build_loaded(sd, meta, name=name or meta.get("name") or path.stem, source=path,
                        scale=scale)


def model_metadata(net: nn.Module, desc: Descriptor,
                   metadata: Mapping[str, str] | None = None, *,
                   measure_context: bool = True) -> dict[str, str]:
    """The ``__metadata__`` written by :func:`save_model` (the caller's keys win, except
    ``context``: for networks without an exact context it is measured here from ``net``'s
    weights, see :func:`sr_cli.infer.context.measure_context`; a copied value could belong to
    other weights). ``measure_context=False`` leaves it out (the probe runs several forward
    passes: seconds of CPU for RRDBNet); the engine then measures it when the file is loaded."""
    meta = {
        "arch": desc.arch,
        "hparams": json.dumps(desc.hparams, sort_keys=True),
        "scale": str(desc.scale),
        "in_channels": str(desc.in_channels),
        "params": str(sum(p.numel() for p in net.parameters())),
        "format": "sr_cli/1",
    }
    for k, v in (metadata or {}).items():
        meta[str(k)] = v if isinstance(v, str) else json.dumps(v, sort_keys=True)
    meta.pop("context", None)
    if not desc.exact_context and measure_context:
        from sr_cli.infer.context import measure_context as measure

        meta["context"] = str(measure(net, desc))
    return meta


def save_model(
    path: str | os.PathLike[str],
    net: nn.Module,
    desc: Descriptor,
    metadata: Mapping[str, str] | None = None,
    *,
    measure_context: bool = True,
) -> None:
    """Write ``net``'s state dict as safetensors with metadata, atomically.

    Tensors are stored contiguous, on the CPU, in their dtype (fp32 for trained models);
    non-string metadata values are JSON-encoded. ``measure_context``: see
    :func:`model_metadata` (False when the file must be written within seconds).
    """
    from safetensors.torch import save

    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in net.state_dict().items()}
    data = save(tensors, metadata=model_metadata(net, desc, metadata,
                                                 measure_context=measure_context))
    atomic_write_bytes(path, data)


BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked", "rpe_biases")
"""Stored tensors that are buffers, not parameters (BatchNorm statistics, DAT's window offset
grid): left out of the header's parameter count, as from a loaded network's."""


def _header(path: Path) -> tuple[dict[str, str], int]:
    """Metadata and parameter count of a safetensors file, from its header only."""
    try:
        with open(path, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            if n > 100_000_000:
                raise ValueError("header too large")
            header = json.loads(fh.read(n))
    except (OSError, ValueError, struct.error) as exc:
        raise ModelError(f"{path}: corrupt safetensors header ({_short(exc)})") from None
    meta = {str(k): str(v) for k, v in (header.pop("__metadata__", None) or {}).items()}
    params = 0
    for k, info in header.items():
        if k.endswith(BUFFER_SUFFIXES):
            continue
        params += math.prod(info.get("shape", []))
    return meta, params


def _scores(meta: Mapping[str, str]) -> dict[str, Any]:
    try:
        s = json.loads(meta.get("scores", "{}"))
    except json.JSONDecodeError:
        return {}
    return s if isinstance(s, dict) else {}


def set5_psnr(scores: Mapping[str, Any]) -> float | None:
    """Set5 PSNR-Y from a scores dict (``{"Set5": {"psnr_y": ...}}``; ``psnr`` accepted)."""
    s5 = scores.get("Set5") or scores.get("set5")
    if isinstance(s5, Mapping):
        for key in ("psnr_y", "psnr"):
            v = s5.get(key)
            if isinstance(v, (int, float)):
                return float(v)
    return None


def _entries(dirs_first_only: bool = False) -> list[ZooEntry]:
    entries = []
    repo = repo_models_dir()
    for name, path in _zoo_files().items():
        if dirs_first_only and path.parent != repo:
            continue
        try:
            meta, params = _header(path)
        except ModelError:
            entries.append(ZooEntry(name, "?", 0, 0, path, description="unreadable file"))
            continue
        arch = meta.get("arch", "?")
        try:
            scale: float = float(meta.get("scale", "0"))
        except ValueError:
            scale = 0
        # the file stem is the name users type (metadata "name" may differ after a rename)
        entries.append(ZooEntry(name=name, arch=arch, scale=scale, params=params, file=path,
                                scores=_scores(meta), description=meta.get("description", "")))
    return entries


def default_model_name(scale: float | None = None) -> str:
    """The default model: ``models/DEFAULT`` if present, else the learned model in the
    repository's ``models/`` with the best Set5 PSNR-Y (x4 preferred), else ``bicubic``.

    With ``scale``: that model when its native scale is ``scale``, else the zoo's model of
    native scale ``scale`` with the best Set5 PSNR-Y (its ``scores`` metadata), else the
    default (which then runs at its own scale and is resized)."""
    marker = repo_models_dir() / "DEFAULT"
    chosen = marker.read_text(encoding="utf-8").strip() if marker.is_file() else ""
    if chosen and scale is None:
        return chosen
    entries = _entries(dirs_first_only=True)
    if chosen and any(e.name == chosen and e.scale == float(scale or 0) for e in entries):
        return chosen
    cands = [e for e in entries if set5_psnr(e.scores) is not None]
    if scale is not None:
        cands = [e for e in cands if e.scale == float(scale)]
    elif any(e.scale == 4 for e in cands):
        cands = [e for e in cands if e.scale == 4]
    if not cands:
        return chosen or "bicubic"
    best = max(cands, key=lambda e: (set5_psnr(e.scores) or 0.0, e.name))
    return best.name


def list_models() -> list[ZooEntry]:
    """Every model: the baselines, then the zoo files (sorted by name); ``default`` marked."""
    default = default_model_name()
    rows = []
    for b in BASELINES:
        rows.append(ZooEntry(name=b, arch=b, scale=0, params=0, file=None,
                             description=DESCRIPTIONS[b], learned=False))
    rows += sorted(_entries(), key=lambda e: e.name)
    for r in rows:
        r.default = r.name == default
    return rows
