"""`sr models fetch`: against a local HTTP server on 127.0.0.1 only (never any other address).

The server (http.server in a thread) serves small checkpoints the tests make, supports Range
requests and ETags, and can drop the connection part-way or answer errors, so downloading,
resuming, verification, conversion and clean-up are all exercised offline.
"""

from __future__ import annotations

import hashlib
import io
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from sr_cli import fetch as core
from sr_cli import zoo
from sr_cli.archs import build
from sr_cli.cli import app

TINY = {"num_feat": 8, "num_conv": 2, "upscale": 2}


@dataclass
class Server:
    files: dict[str, bytes] = field(default_factory=dict)
    requests: list[dict[str, str]] = field(default_factory=list)
    drop_after: int | None = None  # serve this many body bytes once, then cut the connection
    honour_range: bool = True
    url: str = ""


def _handler(state: Server) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet
            pass

        def do_GET(self):  # noqa: N802
            state.requests.append({"path": self.path, **dict(self.headers.items())})
            data = state.files.get(self.path.lstrip("/"))
            if data is None:
                self.send_error(404, "Not Found")
                return
            etag = '"' + hashlib.sha256(data).hexdigest()[:16] + '"'
            start = 0
            rng = self.headers.get("Range")
            if rng and state.honour_range and self.headers.get("If-Range", etag) == etag:
                start = int(rng.split("=")[1].split("-")[0])
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = data[start:]
            self.send_header("Content-Length", str(len(body)))
            self.send_header("ETag", etag)
            self.end_headers()
            if state.drop_after is not None:
                self.wfile.write(body[: state.drop_after])
                self.wfile.flush()
                state.drop_after = None
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.wfile.write(body)

    return Handler


@pytest.fixture
def server() -> Iterator[Server]:
    state = Server()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/mirror"
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def home(tmp_path: Path, monkeypatch) -> Path:
    h = tmp_path / "srhome"
    monkeypatch.setenv("SR_HOME", str(h))
    monkeypatch.delenv(core.BASE_URL_ENV, raising=False)
    return h


def _checkpoint(seed: int = 0, arch: str = "srvgg", hp: dict | None = None) -> tuple[bytes, dict]:
    net, _ = build(arch, **(hp or TINY))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    buf = io.BytesIO()
    torch.save({"params": net.state_dict()}, buf)
    return buf.getvalue(), net.state_dict()


def _entry(name: str, data: bytes, **kw) -> core.Entry:
    params = sum(p.numel() for p in build("srvgg", **TINY)[0].parameters())
    base = {
        "name": name, "filename": f"{name}.pth", "url": None, "arch": "srvgg", "params": params,
        "scale": 2, "description": "tiny test model", "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    base.update(kw)
    return core.Entry(**base)


@pytest.fixture
def tiny(server: Server, monkeypatch) -> tuple[core.Entry, dict]:
    """A tiny SRVGG checkpoint served as mirror/tiny-srvgg.pth with a catalogue entry."""
    data, sd = _checkpoint()
    server.files["mirror/tiny-srvgg.pth"] = data
    entry = _entry("tiny-srvgg", data)
    monkeypatch.setitem(core.CATALOG, entry.name, entry)
    return entry, sd


def _fetch(runner, *args: str):
    return runner.invoke(app, ["models", "fetch", *args])


def _leftovers(home: Path) -> list[str]:
    return sorted(str(p.relative_to(home)) for p in home.rglob("*") if p.is_file())


def test_fetch_verifies_converts_and_caches(runner, home, server, tiny):
    entry, sd = tiny
    r = _fetch(runner, "tiny-srvgg", "--url", server.url)
    assert r.exit_code == 0, r.output
    dest = home / "models" / "tiny-srvgg.safetensors"
    assert _leftovers(home) == ["models/tiny-srvgg.safetensors"]  # no .pth, no .part
    with safe_open(str(dest), "pt") as f:
        meta = f.metadata()
    assert meta["origin_sha256"] == entry.sha256
    assert meta["origin_url"] == f"{server.url}/tiny-srvgg.pth"
    assert meta["arch"] == "srvgg" and meta["recipe"] == "official" and meta["name"] == "tiny-srvgg"
    loaded = zoo.load_model("tiny-srvgg")  # found by name in $SR_HOME/models
    for k, v in sd.items():
        assert torch.equal(loaded.net.state_dict()[k], v), k

    # Cached: no second download; --force downloads again.
    n = len(server.requests)
    r = _fetch(runner, "tiny-srvgg", "--url", server.url)
    assert r.exit_code == 0, r.output
    assert "already in the cache" in r.output
    assert len(server.requests) == n
    r = _fetch(runner, "tiny-srvgg", "--url", server.url, "--force")
    assert r.exit_code == 0, r.output
    assert len(server.requests) == n + 1


def test_base_url_from_environment(runner, home, server, tiny, monkeypatch):
    monkeypatch.setenv(core.BASE_URL_ENV, server.url + "/")
    r = _fetch(runner, "TINY_SRVGG")  # names are case- and -/_-insensitive
    assert r.exit_code == 0, r.output
    assert server.requests[-1]["path"] == "/mirror/tiny-srvgg.pth"
    assert (home / "models" / "tiny-srvgg.safetensors").is_file()


def test_resume_with_range_request(runner, home, server, tiny):
    entry, sd = tiny
    half = entry.size // 2
    server.drop_after = half
    r = _fetch(runner, "tiny-srvgg", "--url", server.url)
    assert r.exit_code == 1, r.output
    assert "resume" in r.output
    part = home / "downloads" / "tiny-srvgg.pth.part"
    assert part.stat().st_size == half
    assert not (home / "models").exists() or not any((home / "models").iterdir())

    r = _fetch(runner, "tiny-srvgg", "--url", server.url)
    assert r.exit_code == 0, r.output
    assert server.requests[-1].get("Range") == f"bytes={half}-"
    assert server.requests[-1].get("If-Range")  # the ETag of the first answer
    assert _leftovers(home) == ["models/tiny-srvgg.safetensors"]
    loaded = zoo.load_model("tiny-srvgg")
    for k, v in sd.items():
        assert torch.equal(loaded.net.state_dict()[k], v), k


def test_server_without_range_support_restarts(runner, home, server, tiny):
    entry, _ = tiny
    server.drop_after = entry.size // 3
    assert _fetch(runner, "tiny-srvgg", "--url", server.url).exit_code == 1
    server.honour_range = False
    r = _fetch(runner, "tiny-srvgg", "--url", server.url)
    assert r.exit_code == 0, r.output
    assert _leftovers(home) == ["models/tiny-srvgg.safetensors"]


def test_force_discards_partial(runner, home, server, tiny):
    entry, _ = tiny
    server.drop_after = 100
    assert _fetch(runner, "tiny-srvgg", "--url", server.url).exit_code == 1
    r = _fetch(runner, "tiny-srvgg", "--url", server.url, "--force")
    assert r.exit_code == 0, r.output
    assert "Range" not in server.requests[-1]


def test_sha_mismatch_leaves_nothing(runner, home, server, tiny, monkeypatch):
    entry, _ = tiny
    monkeypatch.setitem(core.CATALOG, entry.name, _entry(entry.name, b"x", size=entry.size))
    r = _fetch(runner, "tiny-srvgg", "--url", server.url)
    assert r.exit_code == 4, r.output
    assert "SHA-256" in r.output
    assert _leftovers(home) == []


def test_size_mismatch_leaves_nothing(runner, home, server, tiny, monkeypatch):
    entry, _ = tiny
    monkeypatch.setitem(core.CATALOG, entry.name,
                        _entry(entry.name, server.files["mirror/tiny-srvgg.pth"] + b"x"))
    r = _fetch(runner, "tiny-srvgg", "--url", server.url)
    assert r.exit_code == 4, r.output
    assert "size" in r.output
    assert _leftovers(home) == []


def test_sha_prefix_checked(runner, home, server, tiny, monkeypatch):
    entry, _ = tiny
    good = _entry(entry.name, server.files["mirror/tiny-srvgg.pth"], sha256=None,
                  sha256_prefix=entry.sha256[:8])
    monkeypatch.setitem(core.CATALOG, entry.name, good)
    assert _fetch(runner, "tiny-srvgg", "--url", server.url).exit_code == 0
    bad = _entry(entry.name, server.files["mirror/tiny-srvgg.pth"], sha256=None,
                 sha256_prefix="00000000" if not entry.sha256.startswith("0") else "ffffffff")
    monkeypatch.setitem(core.CATALOG, entry.name, bad)
    cached = home / "models" / "tiny-srvgg.safetensors"
    before = cached.read_bytes()
    r = _fetch(runner, "tiny-srvgg", "--url", server.url, "--force")
    assert r.exit_code == 4, r.output
    assert "does not start with" in r.output
    # The failed re-download removed itself; the good copy from before is untouched.
    assert _leftovers(home) == ["models/tiny-srvgg.safetensors"]
    assert cached.read_bytes() == before


def test_wrong_architecture_is_not_converted(runner, home, server, monkeypatch):
    data, _ = _checkpoint(arch="rrdbnet",
                          hp={"num_feat": 8, "num_block": 1, "num_grow_ch": 4, "scale": 2})
    server.files["mirror/impostor.pth"] = data
    monkeypatch.setitem(core.CATALOG, "impostor", _entry("impostor", data))
    r = _fetch(runner, "impostor", "--url", server.url)
    assert r.exit_code == 4, r.output
    assert "expected srvgg" in r.output
    assert _leftovers(home) == []


def test_unsafe_pickle_is_refused(runner, home, server, monkeypatch):
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    data = pickle.dumps({"params": Evil()}, protocol=2)
    server.files["mirror/evil.pth"] = data
    monkeypatch.setitem(core.CATALOG, "evil", _entry("evil", data))
    r = _fetch(runner, "evil", "--url", server.url)
    assert r.exit_code == 4, r.output
    assert "pwned" not in r.output
    assert _leftovers(home) == []


def test_unreachable_server(runner, home, tiny):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now: connection refused
    r = _fetch(runner, "tiny-srvgg", "--url", f"http://127.0.0.1:{port}/m")
    assert r.exit_code == 1, r.output
    assert "cannot reach 127.0.0.1" in r.output and "offline" in r.output
    assert _leftovers(home) == []


def test_timeout(runner, home, tiny):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)  # accepts the TCP handshake, never answers
    try:
        url = f"http://127.0.0.1:{s.getsockname()[1]}/m"
        r = _fetch(runner, "tiny-srvgg", "--url", url, "--timeout", "0.5")
    finally:
        s.close()
    assert r.exit_code == 1, r.output
    assert "0.5 s" in r.output
    assert not (home / "models").exists() or not any((home / "models").iterdir())


def test_file_mirror(runner, home, tmp_path, tiny, server):
    mirror = tmp_path / "mirror dir"
    mirror.mkdir()
    (mirror / "tiny-srvgg.pth").write_bytes(server.files["mirror/tiny-srvgg.pth"])
    r = _fetch(runner, "tiny-srvgg", "--url", mirror.as_uri())
    assert r.exit_code == 0, r.output
    assert _leftovers(home) == ["models/tiny-srvgg.safetensors"]
    r = _fetch(runner, "tiny-srvgg", "--url", (tmp_path / "nowhere").as_uri(), "--force")
    assert r.exit_code == 1, r.output
    assert "cannot read file:" in r.output


def test_http_error(runner, home, server, tiny):
    server.files.clear()
    r = _fetch(runner, "tiny-srvgg", "--url", server.url)
    assert r.exit_code == 1, r.output
    assert "404" in r.output
    assert _leftovers(home) == []


def test_unknown_name_and_usage(runner, home):
    r = _fetch(runner, "no-such-model")
    assert r.exit_code == 4, r.output
    assert "realesr-animevideov3" in r.output
    assert _fetch(runner).exit_code == 2
    assert _fetch(runner, "RealESRGAN_x4plus", "--all").exit_code == 2
    assert _fetch(runner, "realesr-animevideov3", "--url", "ftp://x/").exit_code == 2


def test_manual_only_model_explains_and_imports_file(runner, home, tmp_path, monkeypatch):
    r = _fetch(runner, "RRDB_PSNR_x4")
    assert r.exit_code == 2, r.output  # a usage matter (needs --file), not a verification error
    assert "drive.google.com" in r.output and "--file" in r.output
    # The same path as the real entry, with a tiny stand-in checkpoint imported by hand.
    data, sd = _checkpoint(seed=5)
    entry = _entry("manual-tiny", data, manual="get it by hand")
    monkeypatch.setitem(core.CATALOG, entry.name, entry)
    assert _fetch(runner, "manual-tiny").exit_code == 2
    f = tmp_path / "manual-tiny.pth"
    f.write_bytes(data)
    r = _fetch(runner, "manual-tiny", "--file", str(f))
    assert r.exit_code == 0, r.output
    loaded = zoo.load_model("manual-tiny")
    for k, v in sd.items():
        assert torch.equal(loaded.net.state_dict()[k], v), k
    assert f.exists()  # the user's file is left alone


def test_file_errors_name_the_given_file(runner, home, tmp_path, tiny, monkeypatch):
    entry, _ = tiny
    # under the upstream name: checked against the published size/SHA-256
    bad = tmp_path / "dl dir" / entry.filename
    bad.parent.mkdir()
    bad.write_bytes(b"not a checkpoint")
    r = _fetch(runner, "tiny-srvgg", "--file", str(bad))
    assert r.exit_code == 4, r.output
    assert str(bad) in r.output and "nothing was imported" in r.output
    assert "deleted" not in r.output and bad.exists()
    # under another name: checked by loading it
    other = tmp_path / "other.pth"
    other.write_bytes(b"garbage")
    r = _fetch(runner, "tiny-srvgg", "--file", str(other))
    assert r.exit_code == 4, r.output
    assert str(other) in r.output
    data, _ = _checkpoint(arch="rrdbnet",
                          hp={"num_feat": 8, "num_block": 1, "num_grow_ch": 4, "scale": 2})
    other.write_bytes(data)
    r = _fetch(runner, "tiny-srvgg", "--file", str(other))
    assert r.exit_code == 4, r.output
    assert f"{other}: expected srvgg" in r.output.replace("\n", "")
    assert _leftovers(home) == []


def test_official_name_not_fetched_says_how(runner, home, make_image, write_png, tmp_path):
    img = write_png("a.png", make_image(8, 8))
    for flag in ("-m", "-n"):
        r = runner.invoke(app, ["upscale", str(img), str(tmp_path / "b.png"), flag,
                                "RealESRGAN_x4plus"])
        assert r.exit_code == 4, r.output
        line = r.output.strip()
        assert "\n" not in line
        assert "`sr models fetch RealESRGAN_x4plus`" in line and "--file" in line
    r = runner.invoke(app, ["models", "info", "RRDB_PSNR_x4"])
    assert r.exit_code == 4 and "no direct address" in r.output
    assert "sr models fetch RRDB_PSNR_x4 --file RRDB_PSNR_x4.pth" in r.output


def test_list_and_catalogue():
    names = set(core.CATALOG)
    assert {"RealESRGAN_x4plus", "RealESRNet_x4plus", "RealESRGAN_x2plus",
            "RealESRGAN_x4plus_anime_6B", "realesr-general-x4v3", "realesr-general-wdn-x4v3",
            "realesr-animevideov3", "RealESRGANv2-animevideo-xsx2",
            "RealESRGANv2-animevideo-xsx4", "RRDB_ESRGAN_x4", "RRDB_PSNR_x4"} <= names
    e = core.CATALOG["realesr-animevideov3"]
    assert e.size == 2_334_339
    assert e.sha256 == "4e1e09ba96d08bd4b8455e8897c3242a3501e3766f359941ea894122e158a932"
    for entry in core.CATALOG.values():
        assert entry.url is None or entry.url.startswith("https://github.com/xinntao/")
        assert entry.url is not None or entry.manual


def test_list_prints_catalogue(runner):
    r = _fetch(runner, "--list")
    assert r.exit_code == 0, r.output
    rows = [ln.split("\t") for ln in r.stdout.splitlines()]
    assert len(rows) == len(core.CATALOG)
    row = next(x for x in rows if x[0] == "realesr-animevideov3")
    assert row[3] == "2334339" and row[4].endswith("/v0.2.5.0/realesr-animevideov3.pth")


def test_all_with_a_mirror_reports_failures(runner, home, server):
    # No files on the mirror: every download fails (404); the run goes on and exits 1.
    r = _fetch(runner, "--all", "--url", server.url)
    assert r.exit_code == 1, r.output
    assert f"{len(core.CATALOG)} model(s) failed" in r.output
    assert sorted(q["path"] for q in server.requests) == sorted(
        f"/mirror/{e.filename}" for e in core.CATALOG.values()
    )
    assert _leftovers(home) == []


def test_all_skips_manual_only_models(runner, home, server, monkeypatch):
    data, _ = _checkpoint(seed=2)
    server.files["mirror/direct.pth"] = data
    direct = _entry("direct", data, url=f"{server.url}/direct.pth")
    manual = _entry("by-hand", b"", size=None, sha256=None, manual="by-hand: get it from X")
    monkeypatch.setattr(core, "CATALOG", {"direct": direct, "by-hand": manual})
    r = _fetch(runner, "--all")
    assert r.exit_code == 0, r.output
    assert "by-hand: get it from X" in r.output
    assert _leftovers(home) == ["models/direct.safetensors"]


@pytest.mark.shared
def test_fetch_official_animevideov3_from_local_mirror(runner, home, server, shared_dir):
    """The real checkpoint (../shared/weights), served locally: SHA verified, converted, loads."""
    data = (shared_dir / "weights" / "realesr-animevideov3.pth").read_bytes()
    server.files["mirror/realesr-animevideov3.pth"] = data
    r = _fetch(runner, "realesr-animevideov3", "--url", server.url)
    assert r.exit_code == 0, r.output
    loaded = zoo.load_model("realesr-animevideov3")
    assert loaded.desc.arch == "srvgg" and loaded.desc.scale == 4
    assert sum(p.numel() for p in loaded.net.parameters()) == 621_424
    original = zoo.load_model(str(shared_dir / "weights" / "realesr-animevideov3.pth"))
    ref = original.net.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in loaded.net.state_dict().items())
    with safe_open(str(home / "models" / "realesr-animevideov3.safetensors"), "pt") as f:
        assert f.metadata()["origin_sha256"] == core.CATALOG["realesr-animevideov3"].sha256
