"""The download stage against real local servers: mirrors that serve good, wrong, truncated or no
files, fail with 5xx, never answer, or refuse connections; MNIST_MIRROR; existing files."""

from __future__ import annotations

import functools
import gzip
import http.server
import logging
import socket
import threading
import time
from pathlib import Path

import pytest
import yaml

from pipeline.data.fetch import DownloadError, candidate_sources, download_all, download_file
from pipeline.data.idx import write_idx
from pipeline.download import main

from helpers.data import mnist_source
from helpers.idx import decompressed_sha256, fake_images, write_fake_mnist
from helpers.project import ROOT, full_params

#: Read before the fixtures below take MNIST_MIRROR out of the environment.
REAL_MIRROR = mnist_source()
FAST = {"timeout": 0.3, "retries": 2, "backoff": 0.01}


@pytest.fixture(autouse=True)
def _no_proxy_no_mirror(monkeypatch):
    """Requests to 127.0.0.1 must not go through a proxy, and MNIST_MIRROR is off by default."""
    names = ("http_proxy", "https_proxy", "all_proxy", "MNIST_MIRROR")
    for name in names + tuple(n.upper() for n in names[:3]):
        monkeypatch.delenv(name, raising=False)


# ------------------------------------------------------------------------------- the mirrors
@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Folders served over HTTP: good/ (the files), wrong/ (valid gzip, other content),
    truncated/ (the .gz cut in half), empty/ (404 for everything)."""
    root = tmp_path_factory.mktemp("www")
    files = write_fake_mnist(root / "good")
    for sub in ("wrong", "truncated", "empty"):
        (root / sub).mkdir()
    for index, spec in enumerate(files.values()):
        name = spec["filename"]
        write_idx(root / "wrong" / name, fake_images(3, seed=999 + index))
        good = (root / "good" / name).read_bytes()
        (root / "truncated" / name).write_bytes(good[: len(good) // 2])
    return root, files


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Static files, plus /error/* (always 500), /cut/* (the connection drops mid-body) and
    /flaky/* (503 on the first request of each path, then the file from good/). Records every
    request path on the server."""

    def do_GET(self):
        self.server.requests.append(self.path)
        if self.path.startswith("/error/"):
            self.send_error(500)
            return
        if self.path.startswith("/cut/"):  # promises 1000 bytes, sends 10, hangs up
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"\x1f\x8b" + bytes(8))
            self.close_connection = True
            return
        if self.path.startswith("/flaky/"):
            if self.server.requests.count(self.path) == 1:
                self.send_error(503)
                return
            self.path = "/good/" + self.path.removeprefix("/flaky/")
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def http_server(served):
    root, _ = served
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Handler, directory=str(root))
    )
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def mirror(http_server):
    """``mirror("good")`` -> the base URL of that folder; request log reset per test."""
    http_server.requests.clear()
    port = http_server.server_address[1]
    return lambda name: f"http://127.0.0.1:{port}/{name}/"


@pytest.fixture
def silent_mirror():
    """A server that accepts connections and never says a word."""
    listener = socket.create_server(("127.0.0.1", 0))
    held, stop = [], threading.Event()

    def accept():
        listener.settimeout(0.05)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/mnist/"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    listener.close()


@pytest.fixture
def refused_mirror():
    """A port nobody listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/mnist/"


def assert_clean(out: Path, files: dict) -> None:
    """Every file present has the right digest; no temporary files are left."""
    assert not list(out.glob(".*")), list(out.iterdir())
    expected = {spec["filename"]: spec["sha256"] for spec in files.values()}
    for path in out.iterdir():
        assert decompressed_sha256(path) == expected[path.name], path


def one(files):
    spec = files["train_labels"]
    return spec["filename"], spec["sha256"]


# ------------------------------------------------------------------------------------ tests
def test_good_mirror(tmp_path, served, mirror, caplog):
    root, files = served
    caplog.set_level(logging.INFO)
    out = tmp_path / "raw"
    paths = download_all(files, out, [mirror("good")], **FAST)
    assert sorted(p.name for p in out.iterdir()) == sorted(s["filename"] for s in files.values())
    for key, spec in files.items():
        assert paths[key] == out / spec["filename"]
        assert decompressed_sha256(paths[key]) == spec["sha256"]
        assert paths[key].read_bytes() == (root / "good" / spec["filename"]).read_bytes()
        assert f"{spec['filename']}: ok from {mirror('good')}{spec['filename']}" in caplog.text
        assert f"(sha256 {spec['sha256'][:12]})" in caplog.text
    assert_clean(out, files)


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ("wrong", "digest mismatch (got "),
        ("truncated", "truncated or corrupt gzip ("),
        ("empty", "HTTP 404 Not Found"),
        ("error", "HTTP 500 Internal Server Error (after 2 attempts)"),
        ("cut", "connection closed after 10 of 1000 bytes (after 2 attempts)"),
    ],
)
def test_bad_mirror_then_next_mirror(tmp_path, served, mirror, http_server, caplog, bad, reason):
    _, files = served
    caplog.set_level(logging.INFO)
    out = tmp_path / "raw"
    filename, sha256 = one(files)
    path = download_file(filename, sha256, out, [mirror(bad), mirror("good")], **FAST)
    assert decompressed_sha256(path) == sha256
    assert reason in caplog.text
    assert http_server.requests[-1] == f"/good/{filename}"
    tries = http_server.requests.count(f"/{bad}/{filename}")
    assert tries == (2 if bad in ("error", "cut") else 1)  # only transient errors are retried
    assert_clean(out, files)


def test_transient_error_is_retried_on_the_same_mirror(tmp_path, served, mirror, http_server):
    _, files = served
    filename, sha256 = one(files)
    path = download_file(filename, sha256, tmp_path, [mirror("flaky")], **FAST)
    assert decompressed_sha256(path) == sha256
    assert http_server.requests == [f"/flaky/{filename}"] * 2


def test_silent_mirror_times_out_then_next(tmp_path, served, mirror, silent_mirror, caplog):
    _, files = served
    caplog.set_level(logging.INFO)
    filename, sha256 = one(files)
    start = time.monotonic()
    path = download_file(filename, sha256, tmp_path, [silent_mirror, mirror("good")], **FAST)
    elapsed = time.monotonic() - start
    assert decompressed_sha256(path) == sha256
    assert "timed out after 0.3 s (after 2 attempts)" in caplog.text
    assert 0.6 <= elapsed < 5


def test_all_mirrors_fail(tmp_path, served, mirror, silent_mirror, refused_mirror):
    _, files = served
    filename, sha256 = one(files)
    out = tmp_path / "raw"
    out.mkdir()
    (out / filename).write_bytes(b"a corrupt earlier copy")
    (out / f".{filename}.stale.tmp").write_bytes(b"left by an interrupted run")
    mirrors = [
        mirror("wrong"),
        mirror("truncated"),
        mirror("empty"),
        silent_mirror,
        refused_mirror,
    ]
    with pytest.raises(DownloadError) as info:
        download_file(filename, sha256, out, mirrors, **FAST)
    message = str(info.value)
    assert filename in message and sha256 in message
    expected = {
        mirrors[0]: "digest mismatch (got ",
        mirrors[1]: "truncated or corrupt gzip (",
        mirrors[2]: "HTTP 404 Not Found",
        mirrors[3]: "timed out after 0.3 s (after 2 attempts)",
        mirrors[4]: "connection refused (after 2 attempts)",
    }
    lines = message.splitlines()
    for base, reason in expected.items():
        line = next(line for line in lines if f"{base}{filename}" in line)
        assert reason in line, line
    assert f"expected {sha256})" in message  # the digest mismatch says what it expected
    assert list(out.iterdir()) == []  # neither the bad copy, nor temp files, nor partial files


def test_mnist_mirror_env_is_tried_first(tmp_path, served, mirror, http_server, monkeypatch):
    root, files = served
    params = tmp_path / "params.yaml"
    config = full_params(data={"mirrors": [mirror("good")], "files": files, **FAST})
    params.write_text(yaml.safe_dump(config, sort_keys=False))
    for i, env in enumerate([str(root / "good"), (root / "good").as_uri(), mirror("good")]):
        http_server.requests.clear()
        monkeypatch.setenv("MNIST_MIRROR", env)
        out = tmp_path / f"raw{i}"
        assert main(["--params", str(params), "--out", str(out)]) == 0
        assert_clean(out, files)
        assert len(list(out.iterdir())) == 4
        if env.startswith("http"):  # the env URL was used, not the (identical) mirror...
            assert http_server.requests == [f"/good/{s['filename']}" for s in files.values()]
        else:  # ...and a local mirror means no HTTP at all
            assert http_server.requests == []


def test_mnist_mirror_missing_file_falls_back_to_mirrors(tmp_path, served, mirror, caplog):
    _, files = served
    caplog.set_level(logging.INFO)
    filename, sha256 = one(files)
    empty = tmp_path / "empty-mirror"
    empty.mkdir()
    path = download_file(
        filename, sha256, tmp_path / "raw", [mirror("good")], env_mirror=str(empty), **FAST
    )
    assert decompressed_sha256(path) == sha256
    assert f"{filename}: {empty / filename} (MNIST_MIRROR): not found" in caplog.text


def test_candidate_sources_order():
    sources = candidate_sources("f.gz", ["https://a/mnist", "https://b/x/"], "/data/m")
    assert sources == ["/data/m/f.gz", "https://a/mnist/f.gz", "https://b/x/f.gz"]
    assert candidate_sources("f.gz", ["http://a/"], "file:///d/")[0] == "file:///d/f.gz"
    assert candidate_sources("f.gz", ["http://a/"], None) == ["http://a/f.gz"]


def test_existing_good_file_is_kept(tmp_path, served, mirror, http_server, caplog):
    root, files = served
    caplog.set_level(logging.INFO)
    out = tmp_path / "raw"
    out.mkdir()
    filename, sha256 = one(files)
    # A different gzip of the same content: verified by the decompressed digest, so kept.
    content = gzip.decompress((root / "good" / filename).read_bytes())
    (out / filename).write_bytes(gzip.compress(content, compresslevel=9, mtime=12345))
    before = (out / filename).read_bytes()
    download_file(filename, sha256, out, [mirror("good")], **FAST)
    assert (out / filename).read_bytes() == before
    assert http_server.requests == []
    assert f"{filename}: already present" in caplog.text


def test_existing_corrupt_file_is_replaced(tmp_path, served, mirror, caplog):
    root, files = served
    caplog.set_level(logging.INFO)
    out = tmp_path / "raw"
    out.mkdir()
    filename, sha256 = one(files)
    (out / filename).write_bytes((root / "truncated" / filename).read_bytes())
    (out / f".{filename}.abc123.tmp").write_bytes(b"partial")
    download_file(filename, sha256, out, [mirror("good")], **FAST)
    assert decompressed_sha256(out / filename) == sha256
    assert "the existing copy is bad (truncated or corrupt gzip" in caplog.text
    assert_clean(out, files)


def test_main_failure_is_one_clear_message(tmp_path, served, mirror, capsys):
    _, files = served
    params = tmp_path / "params.yaml"
    config = full_params(data={"mirrors": [mirror("empty")], "files": files, **FAST})
    params.write_text(yaml.safe_dump(config, sort_keys=False))
    out = tmp_path / "raw"
    assert main(["--params", str(params), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    first = files["train_images"]["filename"]
    assert err.startswith(f"error: could not download {first}")
    assert f"{mirror('empty')}{first}: HTTP 404 Not Found" in err
    assert "Traceback" not in err
    assert list(out.iterdir()) == []


def test_main_missing_params(tmp_path, capsys):
    assert main(["--params", str(tmp_path / "nope.yaml"), "--out", str(tmp_path)]) == 2
    assert "nope.yaml not found" in capsys.readouterr().err


def test_help(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert "MNIST_MIRROR" in text and "--out" in text and "--params" in text


def test_real_local_mirror(tmp_path):
    """The real files from ``MNIST_MIRROR`` (a folder or URL), else ``../shared/mnist``, checked
    against the real digests of ``conf/``."""
    if REAL_MIRROR is None:
        pytest.skip("no MNIST mirror: set MNIST_MIRROR to a folder or URL with the four .gz files")
    data = yaml.safe_load((ROOT / "conf" / "data" / "mnist.yaml").read_text())
    paths = download_all(data["files"], tmp_path, [], env_mirror=REAL_MIRROR)
    for key, spec in data["files"].items():
        assert decompressed_sha256(paths[key]) == spec["sha256"]
