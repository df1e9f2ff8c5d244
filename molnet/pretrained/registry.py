"""Pretrained models: shipped inside the package or downloaded once, always verified by sha256."""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import re
import shutil
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import torch

from molnet.atomic_write import atomic_path
from molnet.errors import ModelFileError
from molnet.models.io import load_model_file, read_metadata
from molnet.models.potential import Potential
from molnet.nn.dtypes import resolve_dtype

log = logging.getLogger(__name__)

PRETRAINED_DIR = Path(__file__).parent
REGISTRY_FILE = PRETRAINED_DIR / "registry.json"


@dataclass
class PretrainedEntry:
    """One pretrained model: a file shipped in this folder or a URL, with its sha256."""

    name: str
    family: str
    elements: list[str]
    training_data: str
    sha256: str
    file: str | None = None
    url: str | None = None
    size_bytes: int | None = None
    metrics: dict = field(default_factory=dict)
    description: str = ""


def list_models() -> dict[str, PretrainedEntry]:
    """All registered pretrained models by name (from ``registry.json`` beside this module)."""
    if not REGISTRY_FILE.is_file():
        return {}
    entries = json.loads(REGISTRY_FILE.read_text())
    return {e["name"]: PretrainedEntry(**e) for e in entries}


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cache_dir() -> Path:
    """Download cache: ``$MOLNET_CACHE`` or ``~/.cache/molnet``."""
    return Path(os.environ.get("MOLNET_CACHE", Path.home() / ".cache" / "molnet"))


def download(url: str, sha256: str | None, name: str | None = None) -> Path:
    """Download ``url`` once into the cache and verify it before returning the path.

    A cache entry is named by the expected sha256 (64 hex digits, either case), or without one by
    a hash of the URL itself, so two URLs ending in the same file name never share an entry.
    Without a sha256 the first good download of a URL is kept and reused (delete it from
    :func:`cache_dir` to fetch the URL again). The download goes to a temporary file that is
    renamed into place only once it is complete (as many bytes as the server announced), matches
    the sha256 and reads as a molnet model file; otherwise it is deleted and
    :class:`ModelFileError` says why, so nothing partial or foreign is ever cached.
    """
    if sha256 is not None:
        if not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
            raise ModelFileError(f"{url}: sha256 {sha256!r} is not 64 hexadecimal digits")
        sha256 = sha256.lower()
    filename = name or Path(urllib.parse.urlparse(url).path).name or "model.safetensors"
    key = sha256 if sha256 else "url-" + hashlib.sha256(url.encode()).hexdigest()
    target = cache_dir() / f"{key[:16]}-{filename}"
    if target.is_file() and (sha256 is None or sha256_of(target) == sha256):
        if sha256 is not None:
            return target
        try:
            read_metadata(target)
        except ModelFileError as exc:  # a broken entry without a checksum: fetched anew below
            log.warning("the cached %s from %s is unreadable (%s); downloading it again", target, url, exc)
        else:
            log.info("using %s, cached from %s without a checksum (delete it to download again)", target, url)
            return target
    try:
        with atomic_path(target, suffix=".part") as tmp:
            with open(tmp, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310
                announced = response.headers.get("Content-Length") if hasattr(response, "headers") else None
                shutil.copyfileobj(response, out)
            received = tmp.stat().st_size
            if announced is not None and announced.isdigit() and received != int(announced):
                raise ModelFileError(
                    f"{url}: the download ended after {received} of {announced} bytes; it was deleted, try again"
                )
            got = sha256_of(tmp)
            if sha256 is not None and got != sha256:
                raise ModelFileError(
                    f"{url}: checksum mismatch (expected sha256 {sha256}, got {got}); the download was deleted"
                )
            try:
                read_metadata(tmp)
            except ModelFileError as exc:
                reason = str(exc).removeprefix(f"{tmp}: ")
                raise ModelFileError(
                    f"{url}: the download is not a molnet model file ({reason}); it was deleted"
                ) from exc
    except (OSError, http.client.HTTPException) as exc:
        raise ModelFileError(f"{url}: download failed: {exc}") from exc
    log.info("downloaded %s to %s", url, target)
    return target


def resolve(name_or_path: str | os.PathLike) -> Path:
    """Path of a verified model file for a pretrained name, a local path or a URL."""
    text = str(name_or_path)
    entries = list_models()
    if text in entries:
        entry = entries[text]
        if entry.file is not None:
            path = PRETRAINED_DIR / entry.file
            if sha256_of(path) != entry.sha256:
                raise ModelFileError(f"{path}: shipped model {text!r} fails its sha256 check; reinstall molnet")
            return path
        if entry.url is None:
            raise ModelFileError(f"pretrained model {text!r} has neither a file nor a URL")
        return download(entry.url, entry.sha256)
    if "://" in text:
        parsed = urllib.parse.urlparse(text)
        expected = urllib.parse.parse_qs(parsed.fragment).get("sha256", [None])[0]
        return download(text.split("#")[0], expected)
    path = Path(text)
    if not path.exists():
        raise ModelFileError(f"{text!r} is neither a pretrained model name ({sorted(entries)}) nor an existing file")
    if path.is_dir():
        raise ModelFileError(f"{text}: is a directory; name the model file (.safetensors) in it")
    return path


def model_for_inference(
    model: str | os.PathLike | Potential, dtype: torch.dtype | str, device: str | torch.device = "cpu"
) -> Potential:
    """The model a calculator owns: a copy of a :class:`Potential` (the caller's keeps its device,
    dtype, mode and chunking: :meth:`Potential.inference_copy`), or one loaded by pretrained name,
    file or URL (:func:`load`); on ``device`` in ``dtype``, in eval mode."""
    if isinstance(model, Potential):
        return model.inference_copy(device, resolve_dtype(dtype))
    return load(model, dtype=dtype, device=device)


def load(name_or_path: str | os.PathLike, dtype: torch.dtype | str | None = None, device: str = "cpu") -> Potential:
    """Load a model by pretrained name, file path, or URL (``...#sha256=<hex>`` to verify)."""
    if dtype is not None:
        dtype = resolve_dtype(dtype)
    return load_model_file(resolve(name_or_path), dtype=dtype, device=device)
