"""fetch_rocling against a real local HTTP server laid out like raw.githubusercontent.com."""

from __future__ import annotations

import json
import shutil
import socket
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ablate.data.fetch import SOURCES, fetch_rocling, render_fetch
from ablate.errors import UserError

NAMES = sorted(source.name for source in SOURCES)
SCORES = "rocling23_baseline_official_scores_FT.txt"


class _Server:
    """A threaded http.server on 127.0.0.1 that records every path it was asked for."""

    def __init__(self, root: Path):
        self.root = root
        self.requests: list[str] = []
        server = self

        class Handler(SimpleHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                server.requests.append(self.path)
                super().do_GET()

            def log_message(self, *args):  # keep pytest output clean
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(root)))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def path(self, name: str, index: int = -1) -> Path:
        """Where the server keeps the upstream file behind local file `name`."""
        source = next(s for s in SOURCES if s.name == name)
        return self.root / source.repo / source.commit / source.paths[index]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _lay_out_upstream(shared: Path, root: Path) -> None:
    """Copy the real files to <repo>/<commit>/<path>, splitting the scores file into its two parts."""
    for source in SOURCES:
        files = [root / source.repo / source.commit / path for path in source.paths]
        for file in files:
            file.parent.mkdir(parents=True, exist_ok=True)
        if source.combine is None:
            shutil.copyfile(shared / source.name, files[0])
            continue
        # The reference copy is Overall_Score.txt's FT line, "\n\n\n== FT\n", FT_result_Score.txt.
        head, sep, ft_score = (shared / source.name).read_bytes().partition(b"== FT\n")
        assert sep, "the reference scores file has no '== FT' header"
        ft_line = head.splitlines()[0]
        files[0].write_bytes(ft_line + b"\nSM:   accuracy:  92.46%; precision:  73.28%\n\n\n")
        files[1].write_bytes(ft_score)


@pytest.fixture
def upstream(rocling: Path, tmp_path: Path):
    root = tmp_path / "upstream"
    _lay_out_upstream(rocling, root)
    server = _Server(root)
    yield server
    server.close()


def _leftovers(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.iterdir() if p.name not in NAMES and p.name != "MANIFEST.json")


def test_sources_table_matches_reference_sha256sums(rocling):
    # SHA256SUMS is `<hex>  <name>` per line (sha256sum's format).
    sums = dict(reversed(line.split()) for line in (rocling / "SHA256SUMS").read_text().splitlines() if line)
    assert {s.name: s.sha256 for s in SOURCES} == sums


def test_fetch_downloads_identical_files_and_writes_manifest(upstream, rocling, tmp_path):
    dest = tmp_path / "data"
    result = fetch_rocling(dest, base_url=upstream.url, timeout=5)

    assert sorted(result.downloaded) == NAMES and result.skipped == ()
    for name in NAMES:
        assert (dest / name).read_bytes() == (rocling / name).read_bytes(), name
    assert _leftovers(dest) == []

    manifest = json.loads((dest / "MANIFEST.json").read_text())
    assert result.manifest == dest / "MANIFEST.json"
    assert sorted(k for k in manifest if k != "unavailable") == NAMES
    for source in SOURCES:
        entry = manifest[source.name]
        assert entry["sha256"] == source.sha256
        assert entry["bytes"] == (rocling / source.name).stat().st_size
        assert (entry["repo"], entry["commit"]) == (source.repo, source.commit)
        assert entry["url"] == f"{upstream.url}/{source.repo}/{source.commit}/{source.paths[-1]}"
    assert manifest["healthner_test.jsonl"]["url"].endswith(
        "NYCU-NLP/Chinese-HealthNER-Corpus/a5eaca54376267cee7a015eb870f7f302517d813/test.json")
    assert len(manifest[SCORES]["parts"]) == 2
    assert [(u["repo"], u["path"]) for u in manifest["unavailable"]] == [
        ("NYCU-NLP/Chinese-HealthNER-Corpus", "train.zip")]
    assert len(upstream.requests) == sum(len(s.paths) for s in SOURCES)


def test_second_fetch_skips_verified_files_without_requests(upstream, tmp_path):
    dest = tmp_path / "data"
    fetch_rocling(dest, base_url=upstream.url, timeout=5)
    before = len(upstream.requests)

    result = fetch_rocling(dest, base_url=upstream.url, timeout=5)

    assert len(upstream.requests) == before
    assert sorted(result.skipped) == NAMES and result.downloaded == ()
    assert sorted(k for k in json.loads(result.manifest.read_text()) if k != "unavailable") == NAMES


def test_file_present_with_wrong_hash_is_downloaded_again(upstream, rocling, tmp_path):
    dest = tmp_path / "data"
    dest.mkdir()
    (dest / "rocling23_truth_FT.txt").write_text("edited by hand\n")

    result = fetch_rocling(dest, base_url=upstream.url, timeout=5)

    assert "rocling23_truth_FT.txt" in result.downloaded
    assert (dest / "rocling23_truth_FT.txt").read_bytes() == (rocling / "rocling23_truth_FT.txt").read_bytes()


def test_corrupted_download_is_refused_and_leaves_nothing(upstream, tmp_path):
    served = upstream.path("rocling22_chner_truth.txt")
    served.write_bytes(served.read_bytes().replace("B-BODY".encode(), b"B-DISE", 1))
    dest = tmp_path / "data"

    with pytest.raises(UserError) as caught:
        fetch_rocling(dest, base_url=upstream.url, timeout=5)

    message = str(caught.value)
    assert "rocling22_chner_truth.txt" in message and "SHA-256 mismatch" in message
    assert "2902dab2c4c42b89daf0fb23a52d3dc62a03a5af998c2bfdf70fdd96914153f2" in message
    assert not (dest / "rocling22_chner_truth.txt").exists()
    assert _leftovers(dest) == []  # no temp file either


def test_server_down_says_cannot_reach(tmp_path):
    with socket.socket() as sock:  # a port that was free a moment ago and now has no listener
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    with pytest.raises(UserError, match=rf"cannot reach 127\.0\.0\.1:{port}: .*ABLATE_ROCLING_BASE_URL"):
        fetch_rocling(tmp_path / "data", base_url=f"http://127.0.0.1:{port}", timeout=5)
    assert _leftovers(tmp_path / "data") == []


def test_missing_upstream_file_names_file_and_url(upstream, tmp_path):
    upstream.path("rocling23_baseline_pred_FT.txt").unlink()

    with pytest.raises(UserError) as caught:
        fetch_rocling(tmp_path / "data", base_url=upstream.url, timeout=5)

    message = str(caught.value)
    assert message.startswith("rocling23_baseline_pred_FT.txt: ")
    assert f"{upstream.url}/NYCU-NLP/ROCLING-2023-ST-MultiNERHealth/" in message
    assert "eval/Intput/FT_result.txt answered 404" in message


def test_base_url_from_environment(upstream, tmp_path, monkeypatch):
    monkeypatch.setenv("ABLATE_ROCLING_BASE_URL", upstream.url + "/")
    result = fetch_rocling(tmp_path / "data")
    assert sorted(result.downloaded) == NAMES
    assert upstream.requests  # the local server, not GitHub, answered


def test_bad_base_url_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="not an http"):
        fetch_rocling(tmp_path / "data", base_url="raw.githubusercontent.com")


def test_render_fetch_summarises(upstream, tmp_path):
    dest = tmp_path / "data"
    fetch_rocling(dest, base_url=upstream.url, timeout=5)
    (dest / SCORES).unlink()

    text = render_fetch(fetch_rocling(dest, base_url=upstream.url, timeout=5))

    assert f"{len(NAMES)} files verified" in text
    assert "1 downloaded, 4 already present" in text
    assert "no longer available upstream" in text and "Chinese-HealthNER-Corpus/train.zip" in text
