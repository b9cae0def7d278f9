"""The training loop shared by every recipe.

:func:`run_training` checks everything first (settings, data, ``--init``, VGG weights, the
checkpoint), then trains ``cfg.steps`` steps of: (degrade on the device) -> generator step
(pixel + perceptual + adversarial losses) -> discriminator step -> EMA update -> LR schedulers.
Every ``ckpt_every`` steps it writes ``RUN_DIR/checkpoint.pt``; every ``val_every`` steps it
validates on ``--val`` and exports ``model_best.safetensors`` when the score improves; at the end
it exports ``RUN_DIR/model.safetensors`` (EMA weights when the recipe uses EMA).

Determinism: the data sample of step ``t`` and batch slot ``b``, the on-the-fly degradation and
the pool shuffling are pure functions of ``(seed, rank, t)``; the rest of the state (weights,
optimisers, schedulers, EMA, pool, torch RNG) is in the checkpoint. So ``--resume`` continues
exactly: N steps in one go equal N/2 + N/2 resumed (bitwise on CPU).

Distributed: under ``torchrun`` (env ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``)
the generator and discriminator are wrapped in DistributedDataParallel (NCCL on CUDA, gloo on
CPU); each rank draws its own samples (rank in every seed); ``batch_size`` is per rank; only
rank 0 writes files and validates.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from sr_cli.archs import build, get_arch
from sr_cli.archs.base import Descriptor
from sr_cli.errors import InputError, ModelError, UsageError
from sr_cli.infer.device import emulated_bf16_warning
from sr_cli.io.atomic import refuse_existing
from sr_cli.train.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from sr_cli.train.config import TrainConfig
from sr_cli.train.cpu import schedule_note
from sr_cli.train.data import PairSource, TrainSet, ValImage, load_val_set
from sr_cli.train.ema import EMA
from sr_cli.train.losses import (
    PerceptualLoss,
    gan_d_fake,
    gan_d_real,
    gan_g_loss,
    gradient_loss,
    pixel_loss,
)

__all__ = ["RunOptions", "RunResult", "build_generator", "run_training", "validate"]

Progress = Callable[[int, int, dict[str, float]], None]
Notify = Callable[[str], None]


@dataclass
class RunOptions:
    """Paths and switches of one run (the settings themselves are in :class:`TrainConfig`)."""

    data: Path
    out: Path
    lr_data: Path | None = None
    val: Path | None = None
    resume: bool = False
    init: str | None = None
    vgg_weights: Path | None = None
    perceptual: str = "vgg19"  # "vgg19" (needs vgg_weights) or "random"
    device: str = "auto"
    time_limit: float | None = None  # seconds of training, then stop as at the end


@dataclass
class RunResult:
    step: int
    model_path: Path
    best_path: Path | None
    wall_s: float
    scores: dict[str, float] = field(default_factory=dict)


def options_record(opts: RunOptions) -> dict[str, str | None]:
    """The run's paths and switches as stored in the checkpoint (for ``--resume RUN_DIR``)."""

    def path(p: Path | None) -> str | None:
        return str(Path(p).resolve()) if p is not None else None

    return {"data": path(opts.data), "lr_data": path(opts.lr_data), "val": path(opts.val),
            "init": opts.init, "vgg_weights": path(opts.vgg_weights),
            "perceptual": opts.perceptual, "device": opts.device}


# --------------------------------------------------------------------------- helpers


def _dist_env() -> tuple[int, int, int, bool]:
    """(rank, world_size, local_rank, use_distributed) from torchrun's environment."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use = "WORLD_SIZE" in os.environ and "MASTER_ADDR" in os.environ
    return rank, world, local, use


def _device(spec: str, local_rank: int) -> torch.device:
    if spec == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(spec)
    except RuntimeError:
        raise UsageError(f"--device {spec!r}: not a device (cpu, cuda, cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {spec}: CUDA is not available here")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device(f"cuda:{local_rank}")
    return dev


def _scale_key(arch: str) -> str:
    return "upscale" if "upscale" in get_arch(arch).defaults else "scale"


def build_generator(cfg: TrainConfig) -> tuple[nn.Module, Descriptor]:
    """The recipe's generator at ``cfg.scale`` with ``cfg.arch_params``."""
    params = dict(cfg.arch_params)
    params[_scale_key(cfg.arch)] = cfg.scale
    try:
        net, desc = build(cfg.arch, **params)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"cannot build {cfg.arch} with {params}: {exc}") from None
    # An architecture may prepare a fresh network for training (e.g. SRVGGNetCompact starts
    # as its nearest-upsampled base); --init and --resume weights replace it afterwards.
    init = getattr(net, "init_for_training", None)
    if callable(init):
        init(base=cfg.init_base)
    return net, desc


def _load_init(net: nn.Module, desc: Descriptor, init: str) -> str | None:
    """Load ``--init`` weights (path or zoo name) into ``net``; wrong architecture: ModelError.

    Weights of the same architecture at another scale (an x4 RRDBNet starting an x2 run, an
    SRCNN trained at x3 starting x2) load every tensor whose shape matches; the rest (the
    scale-specific first or last layers) keep their fresh initialisation, and the returned note
    names them. Any other difference in hyperparameters is refused.
    """
    from sr_cli.zoo import load_model

    loaded = load_model(init, scale=desc.scale)
    if loaded.desc.arch != desc.arch:
        raise ModelError(f"--init {init}: a {loaded.desc.arch} network, but this recipe trains "
                         f"{desc.arch}")
    own = net.state_dict()
    theirs = loaded.net.state_dict()
    same = set(own) == set(theirs) and all(own[k].shape == theirs[k].shape for k in own)
    if same:
        net.load_state_dict(theirs)
        return None
    mine = {k: v for k, v in desc.hparams.items() if k not in ("scale", "upscale")}
    other = {k: v for k, v in loaded.desc.hparams.items() if k not in ("scale", "upscale")}
    if mine != other:
        raise ModelError(
            f"--init {init}: {desc.arch} with {loaded.desc.hparams} does not match the recipe's "
            f"{desc.hparams}"
        )
    fresh = sorted(k for k in own if k not in theirs or own[k].shape != theirs[k].shape)
    net.load_state_dict({k: theirs[k] for k in own if k not in fresh}, strict=False)
    return (f"note: --init {init} is x{loaded.desc.scale:g}, this run x{desc.scale:g}: "
            f"{len(own) - len(fresh)} of {len(own)} tensors loaded, "
            f"{', '.join(fresh)} start fresh")


class _StopRequest:
    """Ctrl-C (SIGINT) and SIGTERM while training: stop cleanly, within seconds.

    Inside a step's "safe" part (before any weight, optimiser or pool update) a signal raises
    KeyboardInterrupt at once, and the loop saves the last completed step. Elsewhere (while
    weights are being updated) it is remembered and honoured as soon as the step completes. A
    second signal always raises at once. Background jobs (``cmd &``, ``kill``, ``timeout``)
    cannot send SIGINT to a process whose shell ignores it, so SIGTERM is handled the same way.
    Only the main thread can install handlers; elsewhere this is a no-op.
    """

    def __init__(self) -> None:
        self.requested = 0
        self.safe = False
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: object) -> None:
        self.requested += 1
        if self.safe or self.requested > 1:
            raise KeyboardInterrupt

    def install(self) -> None:
        import signal
        import threading

        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handler)

    def restore(self) -> None:
        import signal

        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def check(self) -> None:
        """At a step boundary: raise KeyboardInterrupt when a stop was requested."""
        if self.requested:
            raise KeyboardInterrupt


def _signal_point(param: torch.Tensor) -> None:
    """Called by backward as each parameter's gradient is accumulated; does nothing itself."""


def _signals_during_backward(net: nn.Module) -> list[Any]:
    """Let Ctrl-C/SIGTERM interrupt a backward pass of ``net`` part-way.

    The autograd engine runs a whole backward pass in C++ (seconds of CPU for RRDBNet on a
    CPU), and Python runs a signal handler only between Python calls, so a stop request would
    wait for the end of the pass. A no-op hook per parameter (:func:`_signal_point`) gives the
    interpreter a point to run the handler at every few layers; :class:`_StopRequest` raises
    there (the backward is in the step's safe part: the partial gradients are never used).
    Returns the hook handles (``.remove()`` each).
    """
    return [p.register_post_accumulate_grad_hook(_signal_point)
            for p in net.parameters() if p.requires_grad]


def _hardware(device: torch.device, world: int) -> str:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        cpu = platform.processor() or platform.machine()
        name = f"{cpu} CPU, {torch.get_num_threads()} threads"
    return f"{world}x {name}" if world > 1 else name


def _step_generator(seed: int, rank: int, step: int) -> torch.Generator:
    """A CPU generator for step ``step`` of rank ``rank``: degradation and pool shuffling."""
    g = torch.Generator()
    g.manual_seed((seed * 1_000_003 + rank * 7_919 + step) % (2**63 - 1))
    return g


class _Degrader:
    """On-the-fly Real-ESRGAN degradation (:mod:`sr_cli.degrade.pipeline`) and USM sharpening."""

    def __init__(self, scale: int, patch_size: int, usm_gt: bool) -> None:
        from sr_cli.degrade.config import DegradeConfig, RealESRGANConfig, UsmConfig
        from sr_cli.degrade.pipeline import min_input_size

        self.usm_cfg = UsmConfig(apply=usm_gt)
        self.cfg = RealESRGANConfig(usm=self.usm_cfg)
        self.scale = scale
        need = min_input_size(DegradeConfig(preset="realesrgan", scale=scale, realesrgan=self.cfg))
        if patch_size < need:
            raise UsageError(
                f"patch_size {patch_size} is too small for the Real-ESRGAN degradation at "
                f"x{scale} (needs >= {need})"
            )

    def usm(self, x: torch.Tensor) -> torch.Tensor:
        from sr_cli.degrade.sharpen import usm_sharp

        u = self.usm_cfg
        return usm_sharp(x, weight=u.weight, radius=u.radius, threshold=u.threshold)

    def degrade(self, gt: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        from sr_cli.degrade.pipeline import realesrgan_batch

        lq, _, _ = realesrgan_batch(gt, self.scale, self.cfg, g)
        return lq


class _Pool:
    """Real-ESRGAN's training pair pool: mixes degraded samples across batches.

    Until full, batches are stored and used as they are; once full, the pool is shuffled, the
    first ``b`` pairs are swapped for the current batch and returned. A call only stages the
    new pool; :meth:`commit` makes it current once the step's weights are updated, so a step
    stopped half-way leaves the pool as the last completed step left it.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.lq: torch.Tensor | None = None
        self.gt: torch.Tensor | None = None
        self.filled = 0
        self._staged: tuple[torch.Tensor, torch.Tensor, int] | None = None

    def __call__(self, lq: torch.Tensor, gt: torch.Tensor, g: torch.Generator
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        b = lq.shape[0]
        if self.lq is None or self.gt is None:
            pool_lq = lq.new_zeros((self.size, *lq.shape[1:]))
            pool_gt = gt.new_zeros((self.size, *gt.shape[1:]))
        else:
            pool_lq, pool_gt = self.lq, self.gt
        if self.filled == self.size:
            idx = torch.randperm(self.size, generator=g).to(lq.device)
            pool_lq, pool_gt = pool_lq[idx], pool_gt[idx]  # new tensors
            out_lq, out_gt = pool_lq[:b].clone(), pool_gt[:b].clone()
            pool_lq[:b], pool_gt[:b] = lq, gt
            self._staged = (pool_lq, pool_gt, self.filled)
            return out_lq, out_gt
        pool_lq, pool_gt = pool_lq.clone(), pool_gt.clone()
        pool_lq[self.filled:self.filled + b] = lq
        pool_gt[self.filled:self.filled + b] = gt
        self._staged = (pool_lq, pool_gt, self.filled + b)
        return lq, gt

    def commit(self) -> None:
        """Make the pool staged by the last call current (after the step's update)."""
        if self._staged is not None:
            self.lq, self.gt, self.filled = self._staged
            self._staged = None

    def state(self) -> dict[str, Any]:
        if self.lq is None or self.gt is None:
            return {"filled": 0}
        return {"filled": self.filled, "lq": self.lq.cpu(), "gt": self.gt.cpu()}

    def load(self, st: dict[str, Any], device: torch.device) -> None:
        self.filled = int(st.get("filled", 0))
        if "lq" in st:
            self.lq, self.gt = st["lq"].to(device), st["gt"].to(device)


# --------------------------------------------------------------------------- validation


@torch.no_grad()
def validate(net: nn.Module, images: list[ValImage], scale: int, device: torch.device,
             *, with_niqe: bool = False) -> dict[str, float]:
    """Mean PSNR-Y / SSIM-Y (border = scale, output rounded to 8 bits, float Y as `sr score`)
    and optionally NIQE (Y rounded to 8 bits, no border crop)."""
    from sr_cli.metrics import psnr, rgb_to_y, ssim
    from sr_cli.metrics.psnr import crop_border

    niqe_params = None
    if with_niqe:
        try:
            from sr_cli.metrics.niqe import load_niqe_params, niqe

            niqe_params = load_niqe_params(None)
        except (ImportError, InputError):
            niqe_params = None
    was_training = net.training
    net.eval()
    ps, ss, nq = [], [], []
    for im in images:
        sr = net(im.lr.to(device)).float().clamp(0, 1).cpu()
        sr8 = torch.round(sr * 255.0).to(torch.float64)
        hr8 = torch.round(im.hr * 255.0).to(torch.float64)
        # As `sr score`: float Y for PSNR/SSIM, Y rounded to 8 bits for NIQE.
        ys, yh = rgb_to_y(sr8), rgb_to_y(hr8)
        ys_c, yh_c = crop_border(ys, scale), crop_border(yh, scale)
        ps.append(float(psnr(ys_c, yh_c)[0]))
        if min(ys_c.shape[-2:]) >= 11:
            ss.append(float(ssim(ys_c, yh_c)[0]))
        if niqe_params is not None and min(ys.shape[-2:]) >= 96:
            with contextlib.suppress(InputError):
                nq.append(float(niqe(rgb_to_y(sr8, round_8bit=True), niqe_params)[0]))
    net.train(was_training)
    out = {"psnr_y": sum(ps) / len(ps)}
    if ss:
        out["ssim_y"] = sum(ss) / len(ss)
    if nq:
        out["niqe"] = sum(nq) / len(nq)
    return out


# --------------------------------------------------------------------------- the run


def _time_up(t0: float, limit: float, use_dist: bool, device: torch.device) -> bool:
    """Whether ``limit`` seconds have passed since ``t0``; under torchrun every rank stops at
    the same step (the slowest clock decides), so no rank waits in a collective forever."""
    up = time.perf_counter() - t0 >= limit
    if use_dist:
        import torch.distributed as dist

        flag = torch.tensor([1 if up else 0], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        up = bool(flag.item())
    return up


def _check_out(opts: RunOptions) -> Path | None:
    ckpt = opts.out / CHECKPOINT_NAME
    if opts.resume:
        if not ckpt.exists():
            raise UsageError(f"--resume: {ckpt} does not exist (nothing to resume)")
        return ckpt
    if ckpt.exists():
        raise UsageError(
            f"{opts.out} already holds a training run; add --resume to continue it or choose "
            "another -o RUN_DIR"
        )
    if opts.out.exists() and not opts.out.is_dir():
        raise UsageError(f"-o {opts.out}: exists and is not a folder")
    return None


def _compare_config(saved: dict[str, Any], cfg: TrainConfig, ckpt: Path) -> None:
    now = cfg.to_dict()
    # These may change on resume: run length, logging cadence, loader workers, cache.
    free = {"steps", "log_every", "val_every", "ckpt_every", "workers", "cache_mb"}
    diff = sorted(k for k in now if k not in free and saved.get(k) != now[k])
    if diff:
        raise UsageError(
            f"--resume: settings differ from the checkpoint's ({', '.join(diff)}); resume with "
            f"the same settings ({ckpt})"
        )


def _metadata(cfg: TrainConfig, opts: RunOptions, source: PairSource, step: int, wall: float,
              hardware: str, scores: dict[str, float], perceptual: str) -> dict[str, str]:
    return {
        "name": opts.out.name,
        "recipe": cfg.recipe,
        "trained_steps": str(step),
        "data": Path(opts.data).resolve().name,
        "data_images": str(source.count),
        "hardware": hardware,
        "wall_time_s": f"{wall:.1f}",
        "scores": json.dumps(scores, sort_keys=True),
        "perceptual": perceptual,
        "train_config": json.dumps(cfg.to_dict(), sort_keys=True),
        **({"teacher": cfg.teacher} if cfg.teacher else {}),
    }


def _log(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, sort_keys=True) + "\n")


def _truncate_log(path: Path, step: int) -> None:
    """On resume, drop log records written after the checkpoint's step."""
    if not path.exists():
        return
    from sr_cli.io.atomic import atomic_write_bytes

    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if int(json.loads(line).get("step", 0)) <= step:
                keep.append(line)
        except (json.JSONDecodeError, ValueError, AttributeError):
            continue
    atomic_write_bytes(path, ("\n".join(keep) + "\n" if keep else "").encode())


def run_training(
    cfg: TrainConfig,
    opts: RunOptions,
    *,
    progress: Progress | None = None,
    notify: Notify | None = None,
) -> RunResult:
    """Train ``cfg`` on ``opts.data`` into ``opts.out`` while holding an exclusive lock on
    ``opts.out`` (a second ``sr train`` into the same folder is refused, exit 2); see
    :func:`_run_training`."""
    from sr_cli.io.runlock import folder_lock

    if _dist_env()[0] != 0:  # torchrun: rank 0 holds the lock for all ranks
        return _run_training(cfg, opts, progress=progress, notify=notify)
    with folder_lock(opts.out, "--out"):
        return _run_training(cfg, opts, progress=progress, notify=notify)


def _run_training(
    cfg: TrainConfig,
    opts: RunOptions,
    *,
    progress: Progress | None = None,
    notify: Notify | None = None,
) -> RunResult:
    """Train ``cfg`` on ``opts.data`` into ``opts.out``; see the module docstring.

    ``progress(step, total, info)`` is called after every step (info: losses, lr, it/s);
    ``notify(message)`` receives notes (checkpoint saved, validation scores, advice).
    Raises UsageError / InputError / ModelError before training for bad settings or input.
    On KeyboardInterrupt a checkpoint is saved first, then the interrupt propagates.
    """
    say = notify or (lambda msg: None)
    cfg.validate()
    rank, world, local_rank, use_dist = _dist_env()
    device = _device(opts.device, local_rank)
    is_main = rank == 0
    on_cuda = device.type == "cuda"

    # ---- checks before any training
    ckpt_path = _check_out(opts)
    data, lr_data = opts.data, opts.lr_data
    if cfg.recipe == "distill" and not cfg.teacher:
        raise UsageError("recipe distill needs a teacher: --set teacher=MODEL (a zoo name or "
                         "weights file sr can load)")
    if cfg.teacher:  # distillation: the teacher's cached outputs are the paired targets
        from sr_cli.train.distill import build_teacher_cache

        if lr_data is not None:
            raise UsageError("--lr-data does not apply to distillation (the teacher cache "
                             "holds the inputs)")
        cache = Path(cfg.teacher_cache) if cfg.teacher_cache else opts.out / "teacher_cache"
        data, lr_data = build_teacher_cache(cfg, Path(data), cache, device=str(device),
                                            notify=say if is_main else None)
    source = PairSource.build(data, lr_data, scale=cfg.scale, patch_size=cfg.patch_size,
                              degradation=cfg.degradation, cache_mb=cfg.cache_mb,
                              lazy=cfg.workers == 0)
    val_images = load_val_set(opts.val, cfg.scale) if opts.val is not None else []
    if cfg.uses_perceptual and opts.perceptual != "random" and opts.vgg_weights is None:
        raise UsageError(
            f"recipe {cfg.recipe} needs a perceptual loss: give --vgg-weights PATH (torchvision "
            "vgg19 .pth or a safetensors conversion), or --perceptual random for a fixed-seed "
            "random VGG19"
        )
    if opts.perceptual not in ("vgg19", "random"):
        raise UsageError(f"--perceptual {opts.perceptual!r}: expected vgg19 or random")
    perceptual_kind = "none"
    if cfg.uses_perceptual:
        perceptual_kind = "random" if opts.vgg_weights is None else "vgg19"

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        net_g, desc = build_generator(cfg)
        net_d = None
        if cfg.uses_gan:
            from sr_cli.archs.discriminators import build_discriminator

            net_d = build_discriminator(cfg.discriminator, 3, cfg.d_features, cfg.patch_size)
    if opts.init and not opts.resume:
        init_note = _load_init(net_g, desc, opts.init)
        if init_note:
            say(init_note)
    elif cfg.init_from and not opts.resume:
        say(f"note: recipe {cfg.recipe} is meant to start from a trained {cfg.init_from} model "
            "(--init WEIGHTS); starting from random weights")
    # the output policy, before any training: no file of the run may be an input (--init)
    refuse_existing([opts.out / n for n in (CHECKPOINT_NAME, "model.safetensors",
                                            "model_best.safetensors", "metrics.jsonl")],
                    overwrite=True)
    perc = None
    if cfg.uses_perceptual:
        from sr_cli.archs.vgg import load_vgg19

        vgg = load_vgg19(cfg.perceptual_layers, opts.vgg_weights)
        perc = PerceptualLoss(vgg, cfg.perceptual_layers, cfg.perceptual_criterion).to(device)
    degrader = (_Degrader(cfg.scale, cfg.patch_size, cfg.usm_gt) if source.mode == "hr_only"
                else None)
    state = load_checkpoint(ckpt_path) if ckpt_path is not None else None
    if state is not None:
        _compare_config(state["config"], cfg, ckpt_path)  # type: ignore[arg-type]
        if int(state["step"]) >= cfg.steps:
            raise UsageError(
                f"--resume: the checkpoint is at step {state['step']}, --steps {cfg.steps} is "
                "already reached (raise --steps to train longer)"
            )

    # ---- set-up
    if use_dist:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if on_cuda else "gloo")
    if on_cuda:
        torch.cuda.set_device(device)
    mem = torch.channels_last if (on_cuda and cfg.channels_last) else torch.contiguous_format
    net_g = net_g.to(device, memory_format=mem).train()  # type: ignore[call-overload]
    ema = EMA(net_g, cfg.ema, cfg.ema_warmup) if cfg.ema > 0 else None
    opt_g = torch.optim.Adam(net_g.parameters(), lr=cfg.lr, betas=tuple(cfg.betas),  # type: ignore[arg-type]
                             weight_decay=cfg.weight_decay)
    sched_g = torch.optim.lr_scheduler.MultiStepLR(opt_g, cfg.milestones, cfg.gamma)
    opt_d = sched_d = None
    if net_d is not None:
        net_d = net_d.to(device, memory_format=mem).train()  # type: ignore[call-overload]
        opt_d = torch.optim.Adam(net_d.parameters(), lr=cfg.lr_d, betas=tuple(cfg.betas_d))  # type: ignore[arg-type]
        sched_d = torch.optim.lr_scheduler.MultiStepLR(opt_d, cfg.milestones_d, cfg.gamma)
    amp_dtype = None
    if cfg.amp == "bf16":  # CUDA and CPU (oneDNN bf16: ~2-3x faster with native bf16 only)
        amp_dtype = torch.bfloat16
        slow = emulated_bf16_warning(device, "bf16")
        if slow:
            say(f"note: amp = bf16: {slow}")
    elif on_cuda and cfg.amp == "fp16":
        amp_dtype = torch.float16
    elif cfg.amp != "none":
        say(f"note: amp = {cfg.amp} applies on CUDA only; training in fp32 on {device}")
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    pool = _Pool(cfg.pool_size) if (cfg.pool_size and source.mode == "hr_only") else None

    start = 0
    best: dict[str, Any] = {}
    wall0 = 0.0
    if state is not None:
        start = int(state["step"])
        net_g.load_state_dict(state["net_g"])
        opt_g.load_state_dict(state["opt_g"])
        sched_g.load_state_dict(state["sched_g"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        if net_d is not None and opt_d is not None and sched_d is not None:
            net_d.load_state_dict(state["net_d"])
            opt_d.load_state_dict(state["opt_d"])
            sched_d.load_state_dict(state["sched_d"])
        if "scaler" in state and state["scaler"]:
            scaler.load_state_dict(state["scaler"])
        if pool is not None and "pool" in state:
            pool.load(state["pool"], device)
        torch.set_rng_state(state["rng"]["cpu"])
        if on_cuda and state["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(state["rng"]["cuda"], device)
        best = dict(state.get("best", {}))
        wall0 = float(state.get("wall_s", 0.0))
        say(f"resuming {opts.out} at step {start}")

    train_g: nn.Module = net_g
    train_d: nn.Module | None = net_d
    if use_dist:
        ids = [device.index] if on_cuda else None
        train_g = nn.parallel.DistributedDataParallel(net_g, device_ids=ids)
        if net_d is not None:
            train_d = nn.parallel.DistributedDataParallel(net_d, device_ids=ids)

    dataset = TrainSet(source, seed=cfg.seed, rank=rank, flip=cfg.flip, rot90=cfg.rot90)
    sampler = range(start * cfg.batch_size, cfg.steps * cfg.batch_size)
    loader = DataLoader(dataset, batch_size=cfg.batch_size, sampler=sampler,
                        num_workers=cfg.workers, pin_memory=on_cuda,
                        persistent_workers=False, drop_last=False)

    out = opts.out
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
    log_path = out / "metrics.jsonl"
    if is_main:  # a fresh run starts a fresh log; a resumed one drops records after its step
        _truncate_log(log_path, start)
    hardware = _hardware(device, world)

    run_options = options_record(opts)

    def autocast() -> contextlib.AbstractContextManager[Any]:
        if amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=amp_dtype)

    def export_net() -> nn.Module:
        return ema.module if ema is not None else net_g

    def checkpoint(step: int, wall: float, *, stopping: bool = False) -> None:
        """checkpoint.pt and model.safetensors of ``step``. ``stopping`` (Ctrl-C, SIGTERM):
        within seconds, so model.safetensors goes without its measured tiling context (the
        probe costs several forward passes; `sr upscale` measures it when it loads the file,
        the next checkpoint of a resumed run stores it)."""
        if not is_main:
            return
        rng = {"cpu": torch.get_rng_state(),
               "cuda": torch.cuda.get_rng_state(device) if on_cuda else None}
        st: dict[str, Any] = {
            "step": step, "config": cfg.to_dict(), "net_g": net_g.state_dict(),
            "opt_g": opt_g.state_dict(), "sched_g": sched_g.state_dict(),
            "ema": ema.state_dict() if ema is not None else None,
            "scaler": scaler.state_dict() if scaler.is_enabled() else None,
            "rng": rng, "best": best, "wall_s": wall,
            "pool": pool.state() if pool is not None else None,
            "options": run_options,
        }
        if net_d is not None and opt_d is not None and sched_d is not None:
            st.update(net_d=net_d.state_dict(), opt_d=opt_d.state_dict(),
                      sched_d=sched_d.state_dict())
        save_checkpoint(out / CHECKPOINT_NAME, st)
        # the run folder always holds usable weights of its last checkpoint
        export(out / "model.safetensors", step, wall, last_scores, measure=not stopping)

    def export(path: Path, step: int, wall: float, scores: dict[str, float],
               measure: bool = True) -> None:
        from sr_cli.zoo import save_model

        net = export_net()
        save_model(path, net, desc, _metadata(cfg, opts, source, step, wall, hardware, scores,
                                              perceptual_kind), measure_context=measure)

    # ---- the loop
    t0 = time.perf_counter()
    step = start
    last_scores: dict[str, float] = dict(best.get("scores", {}))
    ema_rate = 0.0
    t_last = time.perf_counter()

    def wall_now() -> float:
        return wall0 + (time.perf_counter() - t0)

    sums: dict[str, float] = {}
    n_sum = 0
    stop = _StopRequest()
    stop.install()  # restored in the finally below
    hooks = _signals_during_backward(net_g)  # after the EMA copy: the copy has none
    timing: dict[int, float] = {}
    try:
        for batch in loader:
            stop.safe = True  # until the update below, stopping loses nothing
            stop.check()
            g_step = _step_generator(cfg.seed, rank, step)
            hr = batch["hr"].to(device, non_blocking=True)
            if degrader is not None:
                with torch.no_grad():  # degrades the USM-sharpened GT when usm_gt (as Real-ESRGAN)
                    lq = degrader.degrade(hr, g_step)
                if pool is not None:
                    lq, hr = pool(lq, hr, g_step)
            else:
                lq = batch["lr"].to(device, non_blocking=True)
            gt_pix = degrader.usm(hr) if (degrader is not None and cfg.usm_gt) else hr
            if mem is torch.channels_last:
                lq = lq.contiguous(memory_format=mem)

            # generator step
            if net_d is not None:
                net_d.requires_grad_(False)
            opt_g.zero_grad(set_to_none=True)
            losses: dict[str, torch.Tensor] = {}
            with autocast():
                sr = train_g(lq)
                if cfg.pixel_loss != "none" and cfg.pixel_weight > 0:
                    losses["l_pix"] = cfg.pixel_weight * pixel_loss(
                        sr.float(), gt_pix, cfg.pixel_loss, on_y=cfg.pixel_on_y)
                if cfg.grad_weight > 0:
                    losses["l_grad"] = cfg.grad_weight * gradient_loss(sr.float(), gt_pix)
                if perc is not None:
                    losses["l_percep"] = cfg.perceptual_weight * perc(sr.float(), gt_pix)
                if net_d is not None:  # frozen D: the plain module, no gradient sync needed
                    fake_logits = net_d(sr)
                    real_logits = net_d(hr).detach() if cfg.gan_type == "ragan" else None
                    losses["l_g_gan"] = cfg.gan_weight * gan_g_loss(
                        cfg.gan_type, fake_logits.float(),
                        None if real_logits is None else real_logits.float())
            l_g = sum(losses.values(), torch.zeros((), device=device))
            if not torch.isfinite(l_g):
                raise InputError(f"step {step + 1}: the loss became {float(l_g)}; lower lr or "
                                 "check the data")
            scaler.scale(l_g).backward()
            stop.safe = False  # weights, optimiser state and EMA change from here on
            if cfg.grad_clip > 0:
                scaler.unscale_(opt_g)
                torch.nn.utils.clip_grad_norm_(net_g.parameters(), cfg.grad_clip)
            scaler.step(opt_g)

            # discriminator step: real and fake passes with separate backward (as BasicSR)
            if net_d is not None and train_d is not None and opt_d is not None:
                net_d.requires_grad_(True)
                opt_d.zero_grad(set_to_none=True)
                sr_d = sr.detach()
                fake_ref = None
                if cfg.gan_type == "ragan":
                    with torch.no_grad(), autocast():
                        fake_ref = net_d(sr_d).float()
                with autocast():
                    real = train_d(hr)
                    l_d_real = gan_d_real(cfg.gan_type, real.float(), fake_ref)
                scaler.scale(l_d_real).backward()
                with autocast():
                    fake = train_d(sr_d)
                    l_d_fake = gan_d_fake(cfg.gan_type, fake.float(), real.detach().float())
                scaler.scale(l_d_fake).backward()
                scaler.step(opt_d)
                losses["l_d"] = (l_d_real + l_d_fake).detach()
            scaler.update()
            if pool is not None:
                pool.commit()
            if ema is not None:
                ema.update(net_g, step + 1)
            sched_g.step()
            if sched_d is not None:
                sched_d.step()
            step += 1

            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            sums["loss"] = sums.get("loss", 0.0) + float(l_g.detach())
            n_sum += 1
            now = time.perf_counter()
            inst = 1.0 / max(now - t_last, 1e-9)
            t_last = now
            ema_rate = inst if ema_rate == 0 else 0.9 * ema_rate + 0.1 * inst
            if progress is not None and is_main:
                progress(step, cfg.steps, {"loss": float(l_g.detach()), "it_s": ema_rate})
            timing[step - start] = now
            if is_main and step - start == 3 and step < cfg.steps:  # step 1 includes warm-up
                per_step = (timing[3] - timing[1]) / 2.0
                for line in schedule_note(cfg.steps - step, per_step, cfg.batch_size, hardware):
                    say(line)

            if is_main and (step % cfg.log_every == 0 or step == cfg.steps):
                rec: dict[str, Any] = {"step": step, "lr": opt_g.param_groups[0]["lr"],
                                       "time_s": round(wall_now(), 3)}
                rec.update({k: v / n_sum for k, v in sums.items()})
                rec["samples_s"] = ema_rate * cfg.batch_size * world
                _log(log_path, rec)
                sums, n_sum = {}, 0
            if is_main and val_images and (step % cfg.val_every == 0 or step == cfg.steps):
                scores = validate(export_net(), val_images, cfg.scale, device,
                                  with_niqe=cfg.val_niqe)
                last_scores = scores
                _log(log_path, {"step": step, **{f"val_{k}": v for k, v in scores.items()}})
                say(f"step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items()))
                key = "niqe" if cfg.best_metric == "niqe" and "niqe" in scores else "psnr_y"
                better = (not best or best.get("metric") != key
                          or (scores[key] < best["value"] if key == "niqe"
                              else scores[key] > best["value"]))
                if better:
                    best = {"metric": key, "value": scores[key], "step": step, "scores": scores}
                    export(out / "model_best.safetensors", step, wall_now(), scores)
            if is_main and step % cfg.ckpt_every == 0 and step < cfg.steps:
                checkpoint(step, wall_now())
            stop.check()
            if opts.time_limit is not None and _time_up(t0, opts.time_limit, use_dist, device):
                say(f"--time-limit reached at step {step}: saving; continue with --resume")
                break
    except KeyboardInterrupt:
        stop.safe = False
        if is_main and step > start:
            checkpoint(step, wall_now(), stopping=True)
            say(f"interrupted: step {step} saved in {out / CHECKPOINT_NAME} and "
                f"{out / 'model.safetensors'}; continue with `sr train --resume {out}`")
        elif is_main:
            say("interrupted before the first step completed; nothing new saved")
        raise
    finally:
        stop.restore()
        for h in hooks:
            h.remove()

    wall = wall_now()
    final_path = out / "model.safetensors"
    if is_main:
        checkpoint(step, wall)  # also writes final_path
    best_path = out / "model_best.safetensors"
    return RunResult(step=step, model_path=final_path,
                     best_path=best_path if best_path.exists() else None,
                     wall_s=wall, scores=last_scores)
