"""A corpus: find, download and verify its file, read it as text, its character vocabulary (CharTokenizer), and an
index of its windows (WindowIndex: is a sample copied from it?)."""
from __future__ import annotations

import hashlib
import logging
import re
import socket
from pathlib import Path

import numpy as np

from frosty_lm.config import FrostyError

log = logging.getLogger(__name__)


class CorpusError(FrostyError):
    """A corpus cannot be found, fetched or read; the message says what to do."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def locate(name: str, data_dir: str, path: str | None = None, url: str | None = None) -> Path:
    """Where a corpus's file is: `path` if given, else data_dir/<name>.txt; a CorpusError if it is not there and
    has no url. Reads and downloads nothing: train.py calls it before torch loads."""
    if path:
        file = Path(path).expanduser()
        if not file.exists():
            raise CorpusError(f"corpus file {file} does not exist: give an existing UTF-8 file with data.path=...")
        return file
    file = Path(data_dir).expanduser() / f"{name}.txt"
    if not file.exists() and not url:
        raise CorpusError(
            f"corpus {file} not found and dataset {name} has no URL: put the file there, "
            "set FROSTY_DATA_DIR to its directory, or use dataset=text data.path=FILE"
        )
    return file


def check_regular_file(file: Path) -> None:
    """A corpus path must be a regular file: reading a FIFO or a device would block or never end."""
    if file.is_dir():
        raise CorpusError(f"corpus path {file} is a directory, not a file: point data.path at a text file")
    if not file.is_file():
        raise CorpusError(f"corpus path {file} is not a regular file: point data.path at a text file")


def resolve(name: str, data_dir: str, path: str | None = None, url: str | None = None,
            sha256: str | None = None) -> Path:
    """A corpus's local file (as locate says), downloaded from url on first use, checked against sha256 if given."""
    file = locate(name, data_dir, path, url)
    if not file.exists():
        download(url, file, sha256)
    check_regular_file(file)
    if sha256:  # a named corpus, wherever it is read from (data.path=FILE: a copy of it)
        actual = sha256_of(file)
        if actual != sha256 and path:
            raise CorpusError(f"data.path={path} is not the {name} corpus (sha256 {actual}, expected {sha256}): for "
                              f"your own text, use dataset=text data.path={path}")
        if actual != sha256:
            raise CorpusError(
                f"corpus {file} has sha256 {actual}, expected {sha256}: delete it to download it again, "
                "or use dataset=text data.path=FILE for a different text"
            )
    return file


def download(url: str, dest: Path, sha256: str | None) -> None:
    """Fetch url into dest, kept only if whole and its sha256 matches: torch.hub's download_url_to_file writes a
    temporary file, checks it (hash_prefix: the full digest), renames it over dest only then, else deletes it."""
    from torch.hub import download_url_to_file  # torch takes seconds to import: only a download needs it

    log.info("downloading %s to %s", url, dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(60)  # download_url_to_file takes no timeout: a stalled server would hang the run
    try:
        download_url_to_file(url, str(dest), hash_prefix=sha256 or None, progress=False)
    except RuntimeError as err:  # torch.hub's report of a mismatch: invalid hash value (expected "...", got "...")
        got = re.search(r'got "([0-9a-f]+)"', str(err))
        if not got:
            raise
        raise CorpusError(f"download of {url} has sha256 {got.group(1)}, expected {sha256}: the file was not kept; "
                          "try again later") from None
    except OSError as err:  # URLError, HTTPError, timeouts, a full disk
        raise CorpusError(
            f"could not download {url} ({err}): check the network; or save the file as {dest} (or in a directory "
            "named by FROSTY_DATA_DIR); or train on any text file with dataset=text data.path=FILE"
        ) from err
    finally:
        socket.setdefaulttimeout(timeout)


def read_text(file: Path, errors: str = "strict") -> str:
    """The corpus as text. errors='replace' decodes invalid UTF-8 bytes as U+FFFD instead of failing."""
    data = file.read_bytes()
    try:
        text = data.decode("utf-8", errors=errors)
    except UnicodeDecodeError as err:
        raise CorpusError(
            f"corpus {file} is not valid UTF-8 (byte {err.start}): convert it to UTF-8, "
            "or set data.decode_errors=replace"
        ) from None
    if not text:
        raise CorpusError(f"corpus {file} is empty: give a file with some text")
    if len(set(text)) < 2:
        raise CorpusError(f"corpus {file} has only one distinct character: a language model needs at least two")
    return text


class CharTokenizer:
    """The character vocabulary: the sorted distinct characters of a corpus, one id each."""

    def __init__(self, chars: str) -> None:
        self.chars = chars  # stored in checkpoints as this plain string
        self.stoi = {ch: i for i, ch in enumerate(chars)}

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        return cls("".join(sorted(set(text))))

    def __len__(self) -> int:
        return len(self.chars)

    def unknown(self, text: str) -> list[str]:
        """The distinct characters of text that are not in the vocabulary, in order of appearance."""
        return list(dict.fromkeys(ch for ch in text if ch not in self.stoi))

    def encode(self, text: str) -> list[int]:
        missing = self.unknown(text)
        if missing:
            shown = ", ".join(repr(ch) for ch in missing)
            raise ValueError(f"characters not in the vocabulary: {shown}; use only characters of the training corpus")
        return [self.stoi[ch] for ch in text]

    def decode(self, ids) -> str:
        if hasattr(ids, "tolist"):  # a tensor
            ids = ids.tolist()
        return "".join(self.chars[i] for i in ids)

    def encode_tensor(self, text: str):
        """The whole text as one compact tensor, never a Python list of ints (many times larger): uint8 when the
        vocabulary fits a byte (through str.translate, a byte a character), else int32."""
        import torch  # here: train.py checks corpus paths before torch loads

        if len(self) > 256:
            return torch.from_numpy(np.fromiter(map(self.stoi.__getitem__, text), dtype=np.int32, count=len(text)))
        ids = text.translate({ord(ch): i for i, ch in enumerate(self.chars)}).encode("latin-1")
        return torch.frombuffer(bytearray(ids), dtype=torch.uint8)


# sample/copied (callbacks.CopiedShare): the share of a sample's windows of `window` characters that occur verbatim in
# the training split. The split's windows are indexed once per run by a 64-bit polynomial hash, sorted; a hash found
# is checked against the text there, so the share is exact (a collision costs a comparison, never a false hit).
BASE = np.uint64(1_000_003)  # odd, larger than any character id


def window_hashes(ids: np.ndarray, window: int) -> np.ndarray:
    """The hash of every window of `window` ids: sum of id * BASE**(places after it), modulo 2**64. Built by
    doubling (windows of 2k from two of k) and adding up the powers of two in `window`: a few passes, not `window`."""
    if len(ids) < window:
        return np.empty(0, dtype=np.uint64)
    piece, length = ids.astype(np.uint64), 1  # the hashes of windows of `length` ids
    result, done = None, 0  # the hashes of windows of `done` ids (the powers of two of window taken so far)
    with np.errstate(over="ignore"):  # wrapping around 2**64 is the hash's modulus
        while True:
            if window & length:
                result = piece if result is None else _join(result, done, piece, length)
                done += length
            if done == window:
                return result
            piece = _join(piece, length, piece, length)
            length *= 2


def _join(left: np.ndarray, left_length: int, right: np.ndarray, right_length: int) -> np.ndarray:
    """Hashes of windows of left_length + right_length ids, from those of each part (at every start)."""
    n = len(left) - right_length  # windows of the joined length
    shift = np.uint64(pow(int(BASE), right_length, 2**64))
    return left[:n] * shift + right[left_length : left_length + n]


class WindowIndex:
    """Every window of `window` characters of a text (as ids), for exact membership queries."""

    def __init__(self, ids: np.ndarray, window: int) -> None:
        self.ids, self.window = np.ascontiguousarray(ids), window
        hashes = window_hashes(self.ids, window)
        self.order = np.argsort(hashes, kind="stable")
        self.hashes = hashes[self.order]

    def contains(self, ids: np.ndarray) -> np.ndarray:
        """For each window of ids, whether it occurs in the indexed text."""
        queries = window_hashes(np.asarray(ids), self.window)
        found = np.zeros(len(queries), dtype=bool)
        lo = np.searchsorted(self.hashes, queries, side="left")
        hi = np.searchsorted(self.hashes, queries, side="right")
        for i in np.nonzero(hi > lo)[0]:
            query = ids[i : i + self.window]
            found[i] = any(np.array_equal(self.ids[p : p + self.window], query) for p in self.order[lo[i] : hi[i]])
        return found

    def copied_share(self, ids: np.ndarray) -> float | None:
        """The share of the windows of ids found in the indexed text; None if ids has no whole window."""
        found = self.contains(ids)
        return float(found.mean()) if len(found) else None
