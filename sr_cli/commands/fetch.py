"""`sr models fetch`: download the official checkpoints into the user's cache."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sr_cli import console
from sr_cli.errors import RuntimeFailure, SRError, UsageError


def fetch(
    names: Annotated[
        list[str] | None,
        typer.Argument(help="Official model name(s); see --list.", show_default=False),
    ] = None,
    all_: Annotated[
        bool, typer.Option("--all", help="Fetch every model that has a direct address.")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Download again even if cached; discard partials.")
    ] = False,
    url: Annotated[
        str | None,
        typer.Option("--url", help="Mirror base address: files are fetched from "
                     "URL/<upstream file name> (default: $SR_FETCH_BASE_URL, else the "
                     "published release address).", show_default=False),
    ] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds to wait for the server at each step.")
    ] = 30.0,
    file: Annotated[
        Path | None,
        typer.Option("--file", help="Import a checkpoint you downloaded by hand (one NAME): "
                     "verify, convert and cache it like a download.", show_default=False),
    ] = None,
    list_: Annotated[
        bool, typer.Option("--list", help="Print the catalogue (name, size, address) to stdout "
                           "and exit.")
    ] = False,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="No messages on stderr.")] = False,
) -> None:
    """Download official checkpoints, verify them and store them as safetensors in the cache.

    Example: sr models fetch realesr-animevideov3; sr upscale -m realesr-animevideov3 a.png b.png

    The only command that uses the network, and only when you run it. Files come from the
    published Real-ESRGAN release addresses (or a mirror: --url / $SR_FETCH_BASE_URL), are
    checked against the known size and SHA-256 where published and against the expected
    architecture and parameter count always, converted to safetensors with metadata, and
    stored in $SR_HOME/models (else $XDG_CACHE_HOME/sr/models, else ~/.cache/sr/models),
    where -m NAME finds them. Downloads resume (HTTP Range) after a dropped connection: the
    partial file waits in <cache>/downloads/; a mismatched or unconvertible file is deleted.
    A model without a stable address (RRDB_PSNR_x4) is imported from a copy you downloaded:
    the error says where to get it, then --file FILE. Exit codes: 1 network failure (offline,
    HTTP error, timeout), 2 a model that needs --file, 4 unknown name or a file that fails
    verification (the message names it).
    """
    from sr_cli import fetch as core

    if list_:
        for e in core.CATALOG.values():
            size = f"{e.size}" if e.size is not None else "?"
            where = e.url or "(manual: see 'sr models fetch " + e.name + "')"
            print(f"{e.name}\t{e.arch}\tx{e.scale}\t{size}\t{where}")
        return
    if all_ and names:
        raise UsageError("give model names or --all, not both")
    if file is not None and (all_ or not names or len(names) != 1):
        raise UsageError("--file imports one checkpoint: give exactly one NAME")
    if not all_ and not names:
        raise UsageError(
            f"give a model name or --all (known: {', '.join(core.CATALOG)})"
        )
    entries = (list(core.CATALOG.values()) if all_
               else [core.find_entry(n) for n in names or []])

    failures: list[str] = []
    for entry in entries:
        if all_ and file is None and core.resolve_url(entry, url) is None:
            console.warn(entry.manual or f"{entry.name}: no download address; skipped")
            continue
        try:
            with console.progress_bar(entry.name, total=entry.size) as progress:
                res = core.fetch_model(
                    entry.name, base_url=url, force=force, timeout=timeout, from_file=file,
                    callback=lambda done, total: progress(done, total or None),  # 0: unknown
                )
        except SRError as exc:
            if len(entries) == 1:
                raise
            console.warn(f"{entry.name}: {exc.message}")
            failures.append(entry.name)
            continue
        if res.status == "cached":
            console.info(f"{res.name}: already in the cache: {res.path} (--force to fetch again)")
        else:
            console.info(f"{res.name}: {res.status}, sha256 {res.sha256}, saved {res.path}")
    if failures:
        raise RuntimeFailure(f"{len(failures)} model(s) failed: {', '.join(failures)}")
