"""Per-photo backbone features kept between nights in Django's default storage (local or S3).

The pipeline asks for ``"<namespace>:<sha256>"``: the namespace changes whenever the
weights, layer or preprocessing change (``training.ml.pipeline.features_namespace``), and
the photo's content hash names its pixels, so a hit is always the right vector. Each
vector is one small ``.npy`` file at ``features/<namespace>/<sha256>.npy``. numpy only
(no torch import): the pipeline hands in CPU tensors, which numpy converts.
"""
from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Iterator, MutableMapping

import numpy as np
from django.core.files.base import ContentFile
from django.core.files.storage import Storage, default_storage

PREFIX = "features"
# Both parts become path components: never let a key climb out of the folder. A namespace
# may have sub-parts ("<hash>:lower6x2" for lower-layer features): "~" stands for ":" on disk.
_PART = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_NAMESPACE = re.compile(r"^[A-Za-z0-9_-]{1,128}(:[A-Za-z0-9_-]{1,64}){0,3}$")


class StorageFeatureCache(MutableMapping):
    """A ``MutableMapping[str, np.ndarray]`` of float32 feature vectors in a Django storage."""

    def __init__(self, *, storage: Storage | None = None, prefix: str = PREFIX) -> None:
        self.storage = storage or default_storage
        self.prefix = prefix.strip("/")
        self.reads = 0  # hits served, for the run's record
        self.writes = 0

    def _name(self, key: str) -> str:
        namespace, sep, digest = str(key).rpartition(":")
        if not sep or not _NAMESPACE.match(namespace) or not _PART.match(digest):
            raise KeyError(key)
        return f"{self.prefix}/{namespace.replace(':', '~')}/{digest}.npy"

    def __getitem__(self, key: str) -> np.ndarray:
        name = self._name(key)
        try:
            with self.storage.open(name, "rb") as fh:
                payload = fh.read()
        except FileNotFoundError as exc:  # local files and django-storages' S3 alike
            raise KeyError(key) from exc
        try:
            # allow_pickle=False: a stored object is data, never code.
            vector = np.load(io.BytesIO(payload), allow_pickle=False)
        except ValueError:
            # A torn or foreign file is a miss: the pipeline recomputes and overwrites it.
            raise KeyError(key) from None
        self.reads += 1
        return vector

    def __setitem__(self, key: str, value) -> None:
        name = self._name(key)
        vector = np.ascontiguousarray(np.asarray(value, dtype=np.float32).reshape(-1))
        buffer = io.BytesIO()
        np.save(buffer, vector, allow_pickle=False)
        if self.storage.exists(name):
            # Storage.save never overwrites (it renames): remove the old vector first.
            self.storage.delete(name)
        self.storage.save(name, ContentFile(buffer.getvalue()))
        self.writes += 1

    def __delitem__(self, key: str) -> None:
        name = self._name(key)
        if not self.storage.exists(name):
            raise KeyError(key)
        self.storage.delete(name)

    def __contains__(self, key: object) -> bool:
        try:
            return self.storage.exists(self._name(str(key)))
        except KeyError:
            return False

    def __iter__(self) -> Iterator[str]:
        try:
            namespaces, _ = self.storage.listdir(self.prefix)
        except (FileNotFoundError, OSError):
            return
        for namespace in sorted(namespaces):
            _, files = self.storage.listdir(f"{self.prefix}/{namespace}")
            for file in sorted(files):
                if file.endswith(".npy"):
                    yield f"{namespace.replace('~', ':')}:{file[:-4]}"

    def __len__(self) -> int:
        return sum(1 for _ in self)


class StorageExportCache(MutableMapping):
    """A ``MutableMapping[str, bytes]`` of exported model files kept between nights.

    A linear probe's nightly export differs from the last one only in the head, so the
    pipeline keeps one export per frozen backbone (its key names weights, preprocessing,
    class count and torch version) and swaps the head in. Keys are hashed into file names.
    """

    def __init__(self, *, storage: Storage | None = None, prefix: str = "export-templates") -> None:
        self.storage = storage or default_storage
        self.prefix = prefix.strip("/")

    def _name(self, key: str) -> str:
        return f"{self.prefix}/{hashlib.sha256(str(key).encode()).hexdigest()}.onnx"

    def __getitem__(self, key: str) -> bytes:
        try:
            with self.storage.open(self._name(key), "rb") as fh:
                return fh.read()
        except FileNotFoundError as exc:
            raise KeyError(key) from exc

    def __setitem__(self, key: str, value: bytes) -> None:
        name = self._name(key)
        if self.storage.exists(name):
            self.storage.delete(name)
        self.storage.save(name, ContentFile(bytes(value)))

    def __delitem__(self, key: str) -> None:
        name = self._name(key)
        if not self.storage.exists(name):
            raise KeyError(key)
        self.storage.delete(name)

    def __iter__(self) -> Iterator[str]:
        # File names are hashes: the keys themselves are not recoverable, and nobody needs them.
        return iter(())

    def __len__(self) -> int:
        try:
            return len(self.storage.listdir(self.prefix)[1])
        except (FileNotFoundError, OSError):
            return 0
