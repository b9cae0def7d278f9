"""Planning ``sr upscale`` work: inputs (files, folders, stdin) -> outputs (file, folder, stdout).

Pure planning, no I/O besides listing folders: a :class:`Job` maps one source to one
destination. Rules: the last positional argument is the output when there are two or more and
no ``-o``; a folder input needs a folder output; an output never equals an input; two inputs
never map to one output.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sr_cli.errors import InputError, UsageError
from sr_cli.io.atomic import input_named, note_input
from sr_cli.io.formats import EXT_OF_FORMAT, format_for_path, is_image_path
from sr_cli.io.positional import split_inputs_output

__all__ = ["VIDEO_EXTENSIONS", "Job", "plan_jobs", "split_inputs_output"]

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".mov", ".avi", ".m4v", ".gif")


@dataclass(frozen=True)
class Job:
    """One unit of work. ``src``/``dst`` None mean stdin/stdout."""

    src: Path | None
    dst: Path | None
    fmt: str  # output image format ("png", "jpeg", ...)

    @property
    def label(self) -> str:
        return str(self.src) if self.src is not None else "<stdin>"


def is_video_run(inputs: list[str], output: str | None) -> bool:
    """Whether ``sr upscale`` takes the video path. An animated GIF (listed as a video) into
    one image file or stdout is an image run: its first frame, with a warning, like an
    animated PNG or WebP; a file name never becomes a folder of frames."""
    def is_video(p: str | None) -> bool:
        return p is not None and Path(p).suffix.lower() in VIDEO_EXTENSIONS

    if is_video(output):
        return True
    videos = [i for i in inputs if is_video(i)]
    if not videos:
        return False
    to_one_image = _is_stdio(output) or (output is not None and is_image_path(Path(output)))
    return not (to_one_image and len(inputs) == 1
                and all(Path(v).suffix.lower() == ".gif" and Path(v).is_file() for v in videos))


def _is_stdio(p: str | None) -> bool:
    return p is None or p == "-"


def _looks_like_dir(out: str) -> bool:
    p = Path(out)
    return out.endswith(("/", "\\")) or p.is_dir() or (not p.suffix and not p.exists())


def _inside(path: Path, tree: Path | None) -> bool:
    if tree is None:
        return False
    try:
        path.resolve().relative_to(tree)
        return True
    except (ValueError, OSError, RuntimeError):
        return False


def list_inputs(folder: Path, recursive: bool, keep: Callable[[Path], bool],
                exclude: Path | None = None) -> list[Path]:
    """Regular, non-hidden files of ``folder`` (``recursive``: of its whole tree) that ``keep``
    accepts, sorted, never inside the output tree ``exclude`` (so ``sr upscale -r in/ in/out/``
    rerun does not take its own outputs as inputs)."""
    tree = None
    if exclude is not None:  # only a proper subfolder: the same folder is an overwrite error
        try:
            tree = exclude.resolve()
            root = folder.resolve()
            if tree == root or not _inside(tree, root):
                tree = None
        except (OSError, RuntimeError):
            tree = None
    it = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in it if p.is_file() and keep(p) and not p.name.startswith(".")
                  and not _inside(p, tree))


def _list_images(folder: Path, recursive: bool, exclude: Path | None = None) -> list[Path]:
    return list_inputs(folder, recursive, is_image_path, exclude)


def plan_jobs(
    inputs: list[str],
    output: str | None,
    *,
    recursive: bool = False,
    suffix: str = "",
    ext: str | None = None,
    fmt: str | None = None,
) -> list[Job]:
    """Turn the command line into jobs. Raises UsageError / InputError on impossible plans."""
    if not inputs:
        inputs = ["-"]
    if len(inputs) > 1 and any(_is_stdio(i) for i in inputs):
        raise UsageError("stdin ('-') cannot be combined with other inputs")
    out_ext = None
    if ext:
        out_ext = "." + ext.lower().lstrip(".")
        format_for_path(Path("x" + out_ext))  # validates
    sources: list[tuple[Path | None, Path | None]] = []  # (src, root folder or None)
    for item in inputs:
        if _is_stdio(item):
            sources.append((None, None))
            continue
        p = Path(item)
        if p.is_dir():
            tree = None if output is None or output == "-" else Path(output)
            found = _list_images(p, recursive, tree)
            if not found:
                raise InputError(f"{item}: no images found" + ("" if recursive else
                                 " (use --recursive for subfolders)"))
            sources.extend((f, p) for f in found)
        elif p.exists():
            sources.append((p, None))
        else:
            raise InputError(f"{item}: no such file or folder")

    single = len(sources) == 1 and sources[0][1] is None
    jobs: list[Job] = []
    if _is_stdio(output):
        if not single:
            raise UsageError("several inputs need an output folder (OUTPUT or -o DIR/)")
        src = sources[0][0]
        out_fmt = format_for_path(Path("x" + (out_ext or ".png")), fmt) if (fmt or out_ext) \
            else "png"
        jobs.append(Job(src, None, out_fmt))
        return jobs
    assert output is not None  # noqa: S101 - narrowed by _is_stdio
    if single and not _looks_like_dir(output):
        dst = Path(output)
        jobs.append(Job(sources[0][0], dst, format_for_path(dst, fmt)))
    else:
        out_dir = Path(output)
        if out_dir.exists() and not out_dir.is_dir():
            raise UsageError(f"{output}: several inputs need an output folder, not a file")
        for src, root in sources:
            if src is None:
                raise UsageError("stdin input needs an output file or '-', not a folder")
            rel_parent = src.parent.relative_to(root) if root is not None else Path()
            e = out_ext or (EXT_OF_FORMAT[fmt] if fmt else src.suffix.lower())
            dst = out_dir / rel_parent / f"{src.stem}{suffix}{e}"
            jobs.append(Job(src, dst, format_for_path(dst, fmt)))
    seen: dict[Path, Job] = {}
    in_set = {s.resolve() for s, _ in sources if s is not None}
    for s, _ in sources:
        if s is not None:
            note_input(s)  # the output policy refuses any output that is this file
    for j in jobs:
        if j.dst is None:
            continue
        r = j.dst.resolve()
        if r in in_set or input_named(j.dst) is not None:
            raise UsageError(f"{j.dst}: output would overwrite an input; choose another OUTPUT "
                             "or --suffix")
        if r in seen:
            raise UsageError(f"{seen[r].label} and {j.label} would both write {j.dst}")
        seen[r] = j
    return jobs

