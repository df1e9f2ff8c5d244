"""Pretrained models by name, path or URL."""

from molnet.pretrained.registry import PretrainedEntry, cache_dir, download, list_models, load, resolve, sha256_of

__all__ = ["PretrainedEntry", "cache_dir", "download", "list_models", "load", "resolve", "sha256_of"]
