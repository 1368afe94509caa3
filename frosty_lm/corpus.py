"""Find, download and verify a corpus file, and read it as text."""
from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import urllib.request
from pathlib import Path

from frosty_lm.errors import FrostyError

log = logging.getLogger(__name__)


class CorpusError(FrostyError):
    """A corpus cannot be found, fetched or read; the message says what to do."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def resolve(name: str, data_dir: str, path: str | None = None, url: str | None = None, sha256: str | None = None) -> Path:
    """The local file of a corpus: `path` if given, else data_dir/<name>.txt, downloaded from url on first use."""
    if path:
        file = Path(path).expanduser()
        if not file.exists():
            raise CorpusError(f"corpus file {file} does not exist: give an existing UTF-8 file with dataset.path=...")
    else:
        file = Path(data_dir).expanduser() / f"{name}.txt"
        if not file.exists():
            if not url:
                raise CorpusError(
                    f"corpus {file} not found and dataset {name} has no URL: put the file there, "
                    "set FROSTY_DATA_DIR to its directory, or use dataset=text dataset.path=FILE"
                )
            download(url, file, sha256)
    if file.is_dir():
        raise CorpusError(f"corpus path {file} is a directory, not a file: point dataset.path at a text file")
    if sha256 and not path:
        actual = sha256_of(file)
        if actual != sha256:
            raise CorpusError(
                f"corpus {file} has sha256 {actual}, expected {sha256}: delete it to download it again, "
                "or use dataset=text dataset.path=FILE for a different text"
            )
    return file


def download(url: str, dest: Path, sha256: str | None) -> None:
    """Fetch url into dest through a temporary file; keep it only if its sha256 matches."""
    log.info("downloading %s to %s", url, dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            while chunk := response.read(1 << 20):
                out.write(chunk)
        if sha256 and (actual := sha256_of(Path(tmp))) != sha256:
            raise CorpusError(f"download of {url} has sha256 {actual}, expected {sha256}: the file was not kept; try again later")
        os.replace(tmp, dest)
    except CorpusError:
        raise
    except OSError as err:
        raise CorpusError(
            f"could not download {url} ({err}): check the network, or put {dest.name} in a directory "
            "and set FROSTY_DATA_DIR to it"
        ) from err
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_text(file: Path, errors: str = "strict") -> str:
    """The corpus as text. errors='replace' decodes invalid UTF-8 bytes as U+FFFD instead of failing."""
    data = file.read_bytes()
    try:
        text = data.decode("utf-8", errors=errors)
    except UnicodeDecodeError as err:
        raise CorpusError(
            f"corpus {file} is not valid UTF-8 (byte {err.start}): convert it to UTF-8, "
            "or set dataset.decode_errors=replace"
        ) from None
    if not text:
        raise CorpusError(f"corpus {file} is empty: give a file with some text")
    if len(set(text)) < 2:
        raise CorpusError(f"corpus {file} has only one distinct character: a language model needs at least two")
    return text
