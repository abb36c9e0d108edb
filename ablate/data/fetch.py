"""Download of the public ROCLING 2022/2023 and Chinese HealthNER files, checked by SHA-256.

`ablate data fetch rocling DIR`: each file comes from a pinned commit on GitHub, is verified
against the hash in `SOURCES` before it gets its final name, and is listed in DIR/MANIFEST.json
with what is no longer available upstream. Standard library only (urllib).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ablate.errors import UserError

DEFAULT_BASE_URL = "https://raw.githubusercontent.com"
BASE_URL_ENV = "ABLATE_ROCLING_BASE_URL"
MANIFEST = "MANIFEST.json"

HEALTHNER = ("NYCU-NLP/Chinese-HealthNER-Corpus", "a5eaca54376267cee7a015eb870f7f302517d813")
ROCLING22 = ("NYCU-NLP/ROCLING-2022-ST-CHNER", "71032152463094f7ee85c36bd3633d6edf64e03d")
ROCLING23 = ("NYCU-NLP/ROCLING-2023-ST-MultiNERHealth", "a1e05a61d79c0718ec22dbdca4167b9e6d336849")


def _ft_scores(parts: list[bytes]) -> bytes:
    """The FT line of Overall_Score.txt, a `== FT` header, then conlleval's FT_result_Score.txt.

    This is how the reference copy (../shared/data/rocling) was put together; its SHA-256 is
    the one in SOURCES, so the assembled bytes must match it exactly.
    """
    overall, ft_score = parts
    ft_lines = [line for line in overall.splitlines(keepends=True) if line.startswith(b"FT:")]
    if not ft_lines:
        return overall + ft_score  # no FT line upstream: the hash check then reports the mismatch
    return ft_lines[0].rstrip(b"\r\n") + b"\n\n\n== FT\n" + ft_score


@dataclass(frozen=True)
class Source:
    """One local file: where its bytes come from upstream and the SHA-256 they must have."""

    name: str  # file name under DIR
    repo: str  # GitHub owner/name
    commit: str
    paths: tuple[str, ...]  # upstream paths; more than one only when `combine` joins them
    sha256: str
    combine: Callable[[list[bytes]], bytes] | None = None


@dataclass(frozen=True)
class Unavailable:
    """A file the ROCLING 2023 task used that its repository no longer offers."""

    repo: str
    path: str
    note: str


@dataclass(frozen=True)
class FetchResult:
    """What `fetch_rocling` did: files downloaded, files already there, and what upstream lacks."""

    dest: Path
    downloaded: tuple[str, ...]
    skipped: tuple[str, ...]  # already present with the right SHA-256: not requested again
    unavailable: tuple[Unavailable, ...]
    manifest: Path


# The hashes are those of ../shared/data/rocling/SHA256SUMS. To correct a path, edit it here:
# the hash check says at once whether the new path serves the expected bytes.
SOURCES: tuple[Source, ...] = (
    Source("healthner_test.jsonl", *HEALTHNER, ("test.json",),
           "dfb88d9c6c06203b2976574bf9fc83274f97233ad401e4fc7d5041c794a818b0"),
    Source("rocling22_chner_truth.txt", *ROCLING22, ("ROCLING22_CHNER_truth.txt",),
           "2902dab2c4c42b89daf0fb23a52d3dc62a03a5af998c2bfdf70fdd96914153f2"),
    Source("rocling23_truth_FT.txt", *ROCLING23, ("MultiNER-Health_truth_FT.txt",),
           "cda3d77384a04e22c80b759689b5a31fba817ffbdd03634192fa629676e9ad3f"),
    Source("rocling23_baseline_pred_FT.txt", *ROCLING23, ("eval/Intput/FT_result.txt",),
           "83a5b7a223cfeb6c28286aa537f803aada775029978a6401c951fa1f400436e5"),
    # Paths seen in an index of the repository at commit d6b0882, not yet checked at the pinned one.
    Source("rocling23_baseline_official_scores_FT.txt", *ROCLING23,
           ("eval/Score/Overall_Score.txt", "eval/Score/FT_result_Score.txt"),
           "59f3bc5121d56e40b223f4821311af75b2856c773a53ba5443f4722898fa4134", combine=_ft_scores),
)

UNAVAILABLE: tuple[Unavailable, ...] = (
    Unavailable(HEALTHNER[0], "train.zip",
                "the HealthNER training split (FT and SM, most of the ROCLING 2023 training data) "
                "is no longer public; only test.json is left"),
)


def fetch_rocling(dest: Path, base_url: str | None = None, timeout: float = 30) -> FetchResult:
    """Download every file of SOURCES into `dest`, verify it, and write dest/MANIFEST.json.

    `base_url` replaces https://raw.githubusercontent.com (URLs are <base>/<repo>/<commit>/<path>);
    when None, $ABLATE_ROCLING_BASE_URL or the default is used. Files already in `dest` with the
    right SHA-256 are not requested again. Raises UserError on network, HTTP and hash failures.
    """
    dest = Path(dest)
    base = _check_base_url(base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL)
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create {dest}: {err.strerror or err}") from err

    downloaded: list[str] = []
    skipped: list[str] = []
    entries: dict[str, dict] = {}
    for source in SOURCES:
        urls = [_url(base, source, path) for path in source.paths]
        target = dest / source.name
        if target.is_file() and _sha256(target.read_bytes()) == source.sha256:
            skipped.append(source.name)
        else:
            parts = [_download(url, source.name, dest, timeout) for url in urls]
            data = source.combine(parts) if source.combine else parts[0]
            _write_verified(target, data, source, urls)
            downloaded.append(source.name)
        entries[source.name] = {
            # The last URL is the file itself; `parts` lists every URL an assembled file needed.
            "url": urls[-1],
            "sha256": source.sha256,
            "bytes": target.stat().st_size,
            "repo": source.repo,
            "commit": source.commit,
            **({"parts": urls} if len(urls) > 1 else {}),
        }

    manifest = dest / MANIFEST
    payload = {**entries, "unavailable": [vars(u) for u in UNAVAILABLE]}
    _write_atomic(manifest, (json.dumps(payload, indent=2, ensure_ascii=False) + "\n").encode())
    return FetchResult(dest, tuple(downloaded), tuple(skipped), UNAVAILABLE, manifest)


def render_fetch(result: FetchResult) -> str:
    """A short human summary of a fetch for the CLI."""
    total = len(result.downloaded) + len(result.skipped)
    lines = [
        f"ROCLING data in {result.dest}: {total} files verified by SHA-256 "
        f"({len(result.downloaded)} downloaded, {len(result.skipped)} already present)",
        f"manifest: {result.manifest}",
    ]
    if result.unavailable:
        lines.append("no longer available upstream:")
        lines += [f"  {u.repo}/{u.path}: {u.note}" for u in result.unavailable]
    return "\n".join(lines)


def _check_base_url(base_url: str) -> str:
    parts = urllib.parse.urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UserError(f"base URL {base_url!r} is not an http(s) URL (check {BASE_URL_ENV})")
    return base_url.rstrip("/")


def _url(base: str, source: Source, path: str) -> str:
    return f"{base}/{source.repo}/{source.commit}/{urllib.parse.quote(path)}"


def _download(url: str, name: str, dest: Path, timeout: float) -> bytes:
    """The body at `url`; every failure becomes one UserError that names the file or the host."""
    request = urllib.request.Request(url, headers={"User-Agent": "ablate-data-fetch"})
    try:
        # The files are at most a few MB, so each is read into memory; `_write_verified`
        # still goes through a temp file so that a crash never leaves a finished-looking file.
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.read()
    except urllib.error.HTTPError as err:  # before URLError: it is a subclass
        if err.code == 404:
            raise UserError(
                f"{name}: {url} answered 404 Not Found; the file may have moved or been removed "
                f"upstream: correct its path in ablate/data/fetch.py or copy it into {dest} by hand"
            ) from err
        raise UserError(f"{name}: {url} answered HTTP {err.code} {err.reason}") from err
    except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
        host = urllib.parse.urlsplit(url).netloc
        reason = getattr(err, "reason", None) or err
        raise UserError(
            f"cannot reach {host}: {reason}; no internet? copy the files into {dest} by hand "
            f"or set {BASE_URL_ENV}"
        ) from err


def _write_verified(target: Path, data: bytes, source: Source, urls: list[str]) -> None:
    got = _sha256(data)
    if got != source.sha256:
        raise UserError(
            f"{source.name}: SHA-256 mismatch for {' + '.join(urls)}: expected {source.sha256}, "
            f"got {got}; nothing was saved"
        )
    _write_atomic(target, data)


def _write_atomic(target: Path, data: bytes) -> None:
    """Write to a hidden temp file beside `target`, then rename: readers see all or nothing."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise UserError(f"cannot write {target}: {err.strerror or err}") from err
        raise


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
