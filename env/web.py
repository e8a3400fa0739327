"""Download of web-text Parquet shards over HTTP for the `web` profile.

Shards are fetched from a base URL (default: a public web-text dataset of Parquet
shards with a `text` column) with retries and exponential back-off, resumed from a
partial `.part` file with an HTTP Range request, shown with a progress bar, and verified:
against a SHA256SUMS file at the base URL when the server has one, else against a
sha256 ETag (the convention of large-file hosts), and always by reading the Parquet
footer. A shard is renamed into place only once verified.

Three disjoint sets of shards: `train_shards` shards from index 0 for training, one
held-out shard for validation (`val_index`) and one for the sealed test split
(`test_index`, by default the shard just before the validation shard).
"""

from __future__ import annotations

import hashlib
import re
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

DEFAULT_BASE_URL = "https://huggingface.co/datasets/karpathy/fineweb-edu-100b-shuffle/resolve/main"
DEFAULT_NAME_FORMAT = "shard_{index:05d}.parquet"
DEFAULT_VAL_INDEX = 1822  # the last shard of the default dataset is held out for validation
DEFAULT_TEST_INDEX = DEFAULT_VAL_INDEX - 1  # and the one before it for the sealed test split
SUMS_NAME = "SHA256SUMS"
TEXT_COLUMN = "text"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class DownloadError(Exception):
    pass


@dataclass(frozen=True)
class Source:
    base_url: str = DEFAULT_BASE_URL
    name_format: str = DEFAULT_NAME_FORMAT
    train_shards: int = 8
    val_index: int = DEFAULT_VAL_INDEX
    test_index: int | None = None  # None: the shard just before the validation shard (val_index - 1)

    def __post_init__(self):
        if self.test_index is None:
            object.__setattr__(self, "test_index", self.val_index - 1)

    def check(self) -> None:
        """Raise DownloadError unless the train, validation and test shards are disjoint."""
        train = range(self.train_shards)
        if self.val_index < 0 or self.test_index < 0:
            raise DownloadError(f"shard indices must be >= 0 (validation {self.val_index}, test {self.test_index})")
        if self.val_index in train:
            raise DownloadError(f"the validation shard {self.val_index} is one of the {self.train_shards} "
                                f"training shards (0..{self.train_shards - 1})")
        if self.test_index in train:
            raise DownloadError(f"the test shard {self.test_index} is one of the {self.train_shards} "
                                f"training shards (0..{self.train_shards - 1})")
        if self.test_index == self.val_index:
            raise DownloadError(f"the test shard and the validation shard are the same shard ({self.val_index})")

    def train_names(self) -> list[str]:
        return [self.name_format.format(index=i) for i in range(self.train_shards)]

    def val_name(self) -> str:
        return self.name_format.format(index=self.val_index)

    def test_name(self) -> str:
        return self.name_format.format(index=self.test_index)

    def url(self, name: str) -> str:
        return self.base_url.rstrip("/") + "/" + name


def _open(url: str, timeout_s: float, start: int = 0):
    req = urllib.request.Request(url, headers={"User-Agent": "arrl-env"})
    if start:
        req.add_header("Range", f"bytes={start}-")
    return urllib.request.urlopen(req, timeout=timeout_s)


def fetch_checksums(source: Source, timeout_s: float = 30.0) -> dict[str, str]:
    """name -> sha256 from SHA256SUMS at the base URL; empty if the server has none."""
    try:
        with _open(source.url(SUMS_NAME), timeout_s) as resp:
            text = resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return {}
        raise DownloadError(f"{source.url(SUMS_NAME)}: HTTP {e.code}") from None
    except (urllib.error.URLError, OSError) as e:
        raise DownloadError(f"{source.url(SUMS_NAME)}: {e}") from None
    sums = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and _HEX64.match(parts[0].lower()):
            sums[parts[1].lstrip("*")] = parts[0].lower()
    return sums


def _sha256_prefix(path: Path) -> "hashlib._Hash":
    h = hashlib.sha256()
    if path.exists():
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
    return h


def download(
    url: str,
    dest: Path,
    expected_sha256: str | None = None,
    retries: int = 5,
    timeout_s: float = 60.0,
    backoff_s: float = 1.0,
    progress: bool = True,
) -> str:
    """Download `url` to `dest` (resuming `dest.part`), verify, and return the sha256."""
    from tqdm import tqdm

    part = dest.with_name(dest.name + ".part")
    h = _sha256_prefix(part)
    etag_sha = None
    last_error = "no attempt"
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff_s * 2 ** (attempt - 1))
        have = part.stat().st_size if part.exists() else 0
        try:
            with _open(url, timeout_s, start=have) as resp:
                if have and resp.status != 206:  # server ignored the Range: start over
                    have, h = 0, hashlib.sha256()
                    part.unlink(missing_ok=True)
                tag = (resp.headers.get("X-Linked-ETag") or resp.headers.get("ETag") or "").strip('W/"')
                etag_sha = tag.lower() if _HEX64.match(tag.lower()) else None
                length = resp.headers.get("Content-Length")
                total = have + int(length) if length is not None else None
                with open(part, "ab") as f, tqdm(
                    total=total, initial=have, unit="B", unit_scale=True, desc=dest.name,
                    disable=not progress, file=sys.stderr, leave=False,
                ) as bar:
                    while block := resp.read(1 << 20):
                        f.write(block)
                        h.update(block)
                        bar.update(len(block))
                if total is not None and part.stat().st_size != total:
                    raise OSError(f"connection closed at {part.stat().st_size} of {total} bytes")
            break
        except urllib.error.HTTPError as e:
            if e.code == 416:  # range past the end: the partial file is bad, start over
                part.unlink(missing_ok=True)
                h = hashlib.sha256()
            elif e.code < 500 and e.code != 429:
                raise DownloadError(f"{url}: HTTP {e.code}") from None
            last_error = f"HTTP {e.code}"
        except (urllib.error.URLError, OSError) as e:
            last_error = str(e)
            h = _sha256_prefix(part)  # resume from what actually reached the disk
    else:
        raise DownloadError(f"{url}: failed after {retries + 1} attempts ({last_error})")

    digest = h.hexdigest()
    want = expected_sha256 or etag_sha
    if want and digest != want:
        part.unlink(missing_ok=True)
        raise DownloadError(f"{url}: sha256 {digest} does not match the expected {want}")
    _check_parquet(part, url)
    part.replace(dest)
    return digest


def _check_parquet(path: Path, what: str) -> None:
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except Exception as e:  # pyarrow raises several types for a damaged footer
        raise DownloadError(f"{what}: not a readable Parquet file ({e})") from None
    if TEXT_COLUMN not in schema.names:
        raise DownloadError(f"{what}: Parquet file has no {TEXT_COLUMN!r} column")


def fetch_all(source: Source, raw_dir: Path, progress: bool = True, **kw) -> dict[str, str]:
    """Download the train shards, the validation shard and the test shard; returns name -> sha256.

    Shards already on disk are verified against SHA256SUMS when known, else kept.
    """
    source.check()
    raw_dir.mkdir(parents=True, exist_ok=True)
    sums = fetch_checksums(source)
    names = source.train_names() + [source.val_name(), source.test_name()]
    got = {}
    for i, name in enumerate(names):
        dest = raw_dir / name
        if dest.exists():
            digest = _sha256_prefix(dest).hexdigest()
            if name not in sums or sums[name] == digest:
                got[name] = digest
                continue
            dest.unlink()
        if progress:
            print(f"[{i + 1}/{len(names)}] {source.url(name)}", file=sys.stderr)
        got[name] = download(source.url(name), dest, sums.get(name), progress=progress, **kw)
    return got
