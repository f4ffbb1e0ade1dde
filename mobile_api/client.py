"""Reference client of the model update protocol: the executable specification (PROTOCOL.md).

This one file does what an Android or iOS app does with a model, step by step, so an app
that behaves like it is correct:

1. ``check()``   poll ``GET /api/mobile/v1/models/<model>/update`` with the stored ETag in
                 ``If-None-Match`` (``304``: nothing new, keep the stored manifest) and never
                 more often than the manifest's ``poll_interval_seconds``. ``check_static()``
                 does the same from the static channel manifest on a CDN: the app computes its
                 bucket and resolves its release itself (``manifest_from_document``).
2. ``download()`` pick the recommended file of the first accepted format; honour the
                 manifest's ``download`` conditions; apply a bsdiff4 delta from the file it
                 has when one is offered, else download the whole file, resuming an
                 interrupted one with ``Range: bytes=N-``; follow a ``302`` to a presigned
                 URL without sending the app key there; verify sha256; move into place
                 atomically; keep the previous version's file (the next delta starts from it).
3. ``load()``     open the file with onnxruntime (``.onnx``), the ExecuTorch runtime (``.pte``) or
                 LiteRT's interpreter (``.tflite``, package ai-edge-litert); a TFLite input is fed
                 in the layout its shape says (NCHW [1, 3, S, S], or NHWC [1, S, S, 3] as TensorFlow
                 makes them) and an int8 one is quantized with the scale and zero point the file
                 (and the manifest's ``tensors``) states. Core ML (``.mlpackage.zip``) runs on Apple
                 platforms only.
4. ``classify()`` preprocess a photo exactly as the manifest's ``input`` says (an unknown key
                 or value is an error, never a guess) and return (label, probabilities).
5. ``report()``   send telemetry (downloaded, loaded / load_failed, inference latencies).

It is deliberately self-contained: the standard library (urllib for HTTP), numpy, Pillow,
bsdiff4 for deltas, and the runtime of the chosen format. No Django and no project imports,
so it can be read top to bottom and ported. The bucketing function is re-implemented here;
tests check it agrees with the server's ``mobile_api.rollout.bucket_of``.

How a port maps onto it (here -> Android / iOS):

- ``urllib.request``: OkHttp or HttpURLConnection with automatic redirects off for downloads
  / URLSession with a ``willPerformHTTPRedirection`` delegate (drop the app key on redirect).
- ``NetworkState``: ConnectivityManager ``NET_CAPABILITY_NOT_METERED`` and BatteryManager
  / NWPathMonitor ``isExpensive`` and ``UIDevice.batteryState``.
- ``state.json`` in ``cache_dir``: DataStore or SharedPreferences / a file in Application Support.
- ``.part`` file + ``os.replace``: a file in ``noBackupFilesDir`` + ``File.renameTo``
  / ``FileManager.replaceItemAt``.
- ``bsdiff4.patch``: bspatch (C, through JNI) / bspatch (C).
- onnxruntime, ExecuTorch: onnxruntime-android, the ExecuTorch AAR with XNNPACK
  / onnxruntime-objc, the ExecuTorch Swift package.
- LiteRT (``ai_edge_litert.interpreter.Interpreter``): ``com.google.ai.edge.litert`` (the old
  ``org.tensorflow.lite.Interpreter``) / TensorFlowLiteSwift; Core ML: ``MLModel.compileModel``
  on the unzipped ``.mlpackage``, then ``MLModel(contentsOf:)``.
- ``image_to_input``: Bitmap scaling into a FloatBuffer / CGImage or vImage into a Float32 buffer
  (same sizes, same crop rounding, same order of operations; tests hold this to 1e-5).
- when ``check()`` runs: WorkManager periodic work / BGAppRefreshTask, never more often than
  ``poll_interval_seconds``.

Command line (poll, download if allowed, classify one photo, report)::

    python mobile_api/client.py --base-url http://127.0.0.1:8000 --key mk_... --model ants-bees photo.jpg
"""
from __future__ import annotations

import os
import sys

if __name__ == "__main__":
    # Run as a file, Python puts this folder first on the path, where the server's modules
    # (selectors.py, ...) would shadow the standard library's: drop it.
    _here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]

import argparse
import hashlib
import json
import math
import re
import shutil
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

API_PREFIX = "/api/mobile/v1"
APP_KEY_HEADER = "X-App-Key"
INSTALL_ID_HEADER = "X-Install-Id"  # sent to our own server: downloads count their rate limit per install
INSTALL_ID = re.compile(r"^[A-Za-z0-9_-]{8,128}$")
BUCKETS = 100
FILE_EXTENSIONS = {"onnx": ".onnx", "pte": ".pte", "tflite": ".tflite", "mlpackage": ".mlpackage.zip"}
CHUNK = 1 << 16
MAX_LATENCY_SAMPLES = 100  # PROTOCOL.md: at most 100 latency samples per inference event
TIMEOUT_S = 30.0


def tensor_layout(shape: Iterable[int]) -> str:
    """The layout of an image input tensor from its shape: "NCHW" ([1, 3, H, W]) or "NHWC" ([1, H, W, 3]).

    Files the platform makes take NCHW; TFLite files made by TensorFlow (the Firebase ML era)
    take NHWC. PROTOCOL.md, "Formats": a ``tflite`` entry's ``tensors`` give the input's shape.
    """
    dims = [int(d) for d in shape]
    if len(dims) == 4 and dims[1] == 3 and dims[3] != 3:
        return "NCHW"
    if len(dims) == 4 and dims[3] == 3 and dims[1] != 3:
        return "NHWC"
    raise UnsupportedPreprocessing(f"input tensor of shape {dims}: neither [1, 3, H, W] nor [1, H, W, 3]")


def tflite_invoke(interpreter, batch: np.ndarray, *, layout: str = "NCHW") -> np.ndarray:
    """Run a LiteRT interpreter on a float32 batch of one laid out as ``layout``; quantize integer tensors.

    The file's input tensor decides: a [1, H, W, 3] input gets the batch transposed to NHWC, a
    [1, 3, H, W] one to NCHW (never a reshape, which would scramble the pixels). A full-integer
    file takes int8 input: q = round(x / scale + zero_point), clipped to the dtype's range; an
    integer output is turned back into real values as (q - zero_point) * scale.
    """
    source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    x = np.asarray(batch, dtype=np.float32)
    wanted = tensor_layout(source["shape"])
    if layout != wanted:
        x = x.transpose(0, 2, 3, 1) if wanted == "NHWC" else x.transpose(0, 3, 1, 2)
    shape = [int(d) for d in source["shape"]]
    if list(x.shape) != shape:
        raise ClientError(f"the model takes {shape} ({wanted}), the input is {list(x.shape)}")
    scale, zero_point = source.get("quantization") or (0.0, 0)
    if np.dtype(source["dtype"]).kind in "iu" and scale:
        info = np.iinfo(source["dtype"])
        x = np.clip(np.round(x / scale + zero_point), info.min, info.max)
    interpreter.set_tensor(source["index"], np.ascontiguousarray(x).astype(source["dtype"]))
    interpreter.invoke()
    y = interpreter.get_tensor(target["index"])
    scale, zero_point = target.get("quantization") or (0.0, 0)
    if np.dtype(target["dtype"]).kind in "iu" and scale:
        y = (y.astype(np.float32) - zero_point) * scale
    return np.array(y, dtype=np.float32)


def tflite_tensors_check(interpreter, tensors: dict | None) -> None:
    """Refuse a file whose input tensor is not the one the manifest's ``tensors`` describe.

    Shape (hence layout), dtype and, for an integer input, scale and zero point must agree: a
    file that differs from what the server measured is not run on a guess.
    """
    if not tensors or not tensors.get("inputs"):
        return
    stated, source = tensors["inputs"][0], interpreter.get_input_details()[0]
    actual = {"shape": [int(d) for d in source["shape"]], "dtype": np.dtype(source["dtype"]).name}
    if [int(d) for d in stated.get("shape", [])] != actual["shape"] or stated.get("dtype") != actual["dtype"]:
        raise IntegrityError(f"the file's input is {actual}, the manifest says {stated}")
    quantization = stated.get("quantization")
    scale, zero_point = source.get("quantization") or (0.0, 0)
    if quantization and not (math.isclose(float(quantization["scale"]), float(scale), rel_tol=1e-6)
                             and int(quantization["zero_point"]) == int(zero_point)):
        raise IntegrityError(f"the file's input quantization is {(scale, zero_point)}, the manifest says {quantization}")


# --- errors ---------------------------------------------------------------------------------


class ClientError(Exception):
    """Anything this client refuses or cannot do."""


class ServerError(ClientError):
    """The server answered with the platform's error shape (or at least an error status)."""

    def __init__(self, status: int, code: str, message: str, *, retry_after: int | None = None,
                 fields: dict | None = None):
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message
        self.retry_after = retry_after
        self.fields = fields or {}


class DownloadNotAllowed(ClientError):
    """The manifest's download conditions forbid downloading now (e.g. cellular, not charging)."""


class IntegrityError(ClientError):
    """A downloaded file's sha256 (or size) is not what the manifest says."""


class UnsupportedPreprocessing(ClientError):
    """The manifest asks for an input step this client does not implement: refuse, never guess."""


class NoUpdate(ClientError):
    """There is nothing to download or load (no manifest yet, or no release for this install)."""


# --- bucketing (same rule as the server, PROTOCOL.md "Bucketing") ------------------------------


def bucket_of(*, salt: str, install_id: str) -> int:
    """The install's bucket (0..99) on a channel whose salt is ``"<model>/<channel>"``."""
    digest = hashlib.sha256(f"{salt}:{install_id}".encode()).hexdigest()
    return int(digest[:8], 16) % BUCKETS


def app_version_key(version: str) -> tuple[int, ...]:
    """A dotted app version as a comparable tuple ("2.10" > "2.9"; "2.1" == "2.1.0")."""
    parts = [int(p) for p in version.split(".")]
    return tuple(parts + [0] * (4 - len(parts)))


def release_resolve(document: dict, *, install_id: str, platform: str, app_version: str, formats: Iterable[str],
                    current_version: int | None = None) -> dict | None:
    """The release of a static channel manifest this install gets, or None (keep what you have).

    The rule (PROTOCOL.md, ``mobile_api/rollout.py``): releases are newest first; the first one
    wins that (1) targets the install: its platform and one of its formats are allowed (an
    empty list allows all) and ``min_app_version <= app_version <= max_app_version`` (empty:
    open); (2) covers its bucket: ``bucket < rollout_percent``; (3) is active, or paused and
    the install already runs it.
    """
    bucket = bucket_of(salt=document["salt"], install_id=install_id)
    app = app_version_key(app_version)
    formats = set(formats)
    for release in document.get("releases", []):
        if release.get("platforms") and platform not in release["platforms"]:
            continue
        if release.get("formats") and not formats.intersection(release["formats"]):
            continue
        low, high = release.get("min_app_version") or "", release.get("max_app_version") or ""
        if (low and app < app_version_key(low)) or (high and app > app_version_key(high)):
            continue
        if bucket >= release["rollout_percent"]:
            continue
        if release["state"] == "active" or (release["state"] == "paused" and current_version == release["version"]):
            return release
    return None


def manifest_from_document(document: dict, *, install_id: str, platform: str, app_version: str,
                           formats: Iterable[str], current_version: int | None = None) -> dict:
    """The manifest the update endpoint would answer, computed from the static channel manifest.

    An app (or an edge worker) that reads ``manifests/<model>/<channel>.json`` from a CDN gets
    the same answer without Django: resolve the release, keep the accepted formats in the
    install's order of preference (recommended first within a format, as listed).
    """
    formats = tuple(formats)
    bucket = bucket_of(salt=document["salt"], install_id=install_id)
    answer = {
        "model": document["model"], "channel": document["channel"], "version": None,
        "reason": "no_release_matches", "download": document["download"],
        "poll_interval_seconds": document["poll_interval_seconds"],
        "rollout": {"bucket": bucket, "percent": None, "release_state": None},
    }
    release = release_resolve(document, install_id=install_id, platform=platform, app_version=app_version,
                              formats=formats, current_version=current_version)
    if release is None:
        return answer
    order = {fmt: i for i, fmt in enumerate(formats)}
    offered = set(release.get("formats") or order)
    artifacts = sorted((a for a in release["manifest"]["artifacts"] if a["format"] in order and a["format"] in offered),
                       key=lambda a: order[a["format"]])
    answer.update(release["manifest"])
    answer.update(reason=None, artifacts=artifacts,
                  rollout={"bucket": bucket, "percent": release["rollout_percent"], "release_state": release["state"]})
    return answer


# --- download conditions -----------------------------------------------------------------------


@dataclass(frozen=True)
class NetworkState:
    """What the device says right now. ``wifi``: an unmetered network; ``charging``: on power."""

    wifi: bool = True
    charging: bool = True


def download_refusal(conditions: dict, state: NetworkState, *, size: int) -> str | None:
    """Why downloading ``size`` bytes is not allowed now under the manifest's ``download``, or None.

    Rules (PROTOCOL.md): only while charging if ``charging_only``; on a metered network never
    if ``wifi_only`` and never more than ``max_cellular_bytes`` (0: nothing on cellular).
    ``size`` is what will actually be transferred, so a small delta may go where the full
    file may not.
    """
    if conditions.get("charging_only") and not state.charging:
        return "the release downloads only while charging"
    if state.wifi:
        return None
    if conditions.get("wifi_only"):
        return "the release downloads only on Wi-Fi"
    limit = conditions.get("max_cellular_bytes")
    if limit is not None and size > int(limit):
        return f"{size} bytes is more than the {int(limit)} bytes allowed on cellular"
    return None


# --- preprocessing (the manifest's "input") ----------------------------------------------------

# Every key the server may send and what this client does with it. A key not listed here
# (or a value not supported below) raises UnsupportedPreprocessing.
INPUT_KEYS = {
    "input_size",  # side of the square the model takes
    "resize",  # the shorter side is resized to this first
    "resize_mode",  # how: "shorter_side_bilinear_antialias"
    "crop",  # "center": the centred input_size square
    "mean", "std",  # per channel, on the scaled pixels: (x - mean) / std
    "channel_order",  # "RGB" or "BGR"
    "layout",  # "NCHW" or "NHWC"
    "dtype",  # "float32"
    "scale",  # pixel scaling before mean/std: 1/255 (number) or "0..1"
    "output",  # what the model returns: "probabilities", or "logits" / "scores" (softmax applied here)
    # An imported file with an integer input (PROTOCOL.md, "Imported versions"): the float input
    # above is quantized with the file's own scale and zero point (``tflite_invoke``), which
    # ``load()`` checks against the manifest's ``tensors``.
    "input_dtype", "input_quantization",
}
_RESIZE_MODES = {"shorter_side_bilinear_antialias"}
_ONE_OVER_255 = 1.0 / 255.0

# Transparent pixels are composited onto white, as the server does for uploads.
_ALPHA_BACKGROUND = (255, 255, 255, 255)


@dataclass(frozen=True)
class InputSpec:
    """The manifest's ``input``, checked: every key known, every value supported."""

    input_size: int
    resize: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    channel_order: str = "RGB"
    layout: str = "NCHW"
    output: str = "probabilities"

    @classmethod
    def from_manifest(cls, spec: dict) -> InputSpec:
        unknown = sorted(set(spec) - INPUT_KEYS)
        if unknown:
            raise UnsupportedPreprocessing(f"unknown input keys {unknown}; this client knows {sorted(INPUT_KEYS)}")

        def expect(key: str, allowed: Iterable[Any], default: Any) -> Any:
            value = spec.get(key, default)
            if value not in allowed:
                raise UnsupportedPreprocessing(f"unsupported input {key}={value!r} (supported: {sorted(allowed)})")
            return value

        expect("resize_mode", _RESIZE_MODES, "shorter_side_bilinear_antialias")
        expect("crop", {"center"}, "center")
        expect("dtype", {"float32"}, "float32")
        scale = spec.get("scale", _ONE_OVER_255)
        if scale != "0..1" and not (
            isinstance(scale, (int, float)) and math.isclose(float(scale), _ONE_OVER_255, rel_tol=1e-6)
        ):
            raise UnsupportedPreprocessing(f"unsupported input scale={scale!r} (supported: 1/255 or '0..1')")
        try:
            input_size, resize = int(spec["input_size"]), int(spec["resize"])
            mean = tuple(float(v) for v in spec["mean"])
            std = tuple(float(v) for v in spec["std"])
        except (KeyError, TypeError, ValueError) as exc:
            raise UnsupportedPreprocessing(f"input needs input_size, resize, mean and std: {exc!r}") from exc
        if len(mean) != 3 or len(std) != 3 or any(s <= 0 for s in std) or resize < input_size or input_size < 1:
            raise UnsupportedPreprocessing(f"invalid input sizes or statistics: {spec!r}")
        return cls(
            input_size=input_size, resize=resize, mean=mean, std=std,
            channel_order=expect("channel_order", {"RGB", "BGR"}, "RGB"),
            layout=expect("layout", {"NCHW", "NHWC"}, "NCHW"),
            output=expect("output", {"probabilities", "logits", "scores"}, "probabilities"),
        )


def image_rgb(image: Image.Image) -> Image.Image:
    """An 8-bit RGB version of any Pillow image (alpha composited onto white; 16-bit scaled)."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, _ALPHA_BACKGROUND), rgba).convert("RGB")
    if mode.startswith("I;16"):
        # Pillow clips 16-bit values at 255 on convert("L"); scale the full range instead.
        gray = np.asarray(image, dtype=np.float64) / 257.0
        return Image.fromarray(np.clip(np.rint(gray), 0, 255).astype(np.uint8)).convert("RGB")
    return image.convert("RGB")


def image_to_input(image: Image.Image, spec: InputSpec) -> np.ndarray:
    """One upright image -> the model's float32 input batch of one ([1, 3, S, S] or [1, S, S, 3]).

    1. RGB (see ``image_rgb``).
    2. Resize so the shorter side is ``resize``, bilinear with antialiasing (Pillow's BILINEAR
       widens its kernel when shrinking); the longer side is ``int(resize * long / short)``
       (truncated). Not resized if already that size.
    3. Crop the centred ``input_size`` square; its left/top are ``round((W - S) / 2)`` with
       round-half-to-even (Python's ``round``, as torchvision).
    4. float32 pixels / 255, then ``(x - mean) / std`` per channel (subtract, then divide).
    5. Channel order and layout as asked.
    """
    rgb = image_rgb(image)
    width, height = rgb.size
    if width < 1 or height < 1:
        raise ValueError("image has no pixels")
    if width <= height:
        size = (spec.resize, int(spec.resize * height / width))
    else:
        size = (int(spec.resize * width / height), spec.resize)
    if size != (width, height):
        rgb = rgb.resize(size, resample=Image.Resampling.BILINEAR)
    left = round((size[0] - spec.input_size) / 2.0)
    top = round((size[1] - spec.input_size) / 2.0)
    rgb = rgb.crop((left, top, left + spec.input_size, top + spec.input_size))
    pixels = np.asarray(rgb, dtype=np.uint8).astype(np.float32) / np.float32(255.0)
    pixels = (pixels - np.asarray(spec.mean, dtype=np.float32)) / np.asarray(spec.std, dtype=np.float32)
    if spec.channel_order == "BGR":
        pixels = pixels[:, :, ::-1]
    if spec.layout == "NCHW":
        pixels = pixels.transpose(2, 0, 1)
    return np.ascontiguousarray(pixels[np.newaxis], dtype=np.float32)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max())
    return shifted / shifted.sum()


# --- files --------------------------------------------------------------------------------------


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)  # readers see the old file or the new one, never half of one
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --- HTTP ----------------------------------------------------------------------------------------


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Redirects surface as 3xx answers: the client follows them itself, without the app key."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


_opener = urllib.request.build_opener(_NoRedirect)


@dataclass
class Response:
    status: int
    headers: dict[str, str]  # lower-case names
    body: Any  # the open response (stream it) or bytes

    def read(self, limit: int = -1) -> bytes:
        """The body (at most ``limit`` bytes: a hostile answer cannot fill the memory)."""
        if isinstance(self.body, bytes):
            return self.body if limit < 0 else self.body[:limit]
        return self.body.read(limit)

    def close(self) -> None:
        if not isinstance(self.body, bytes):
            self.body.close()


def _request(method: str, url: str, *, headers: dict[str, str], data: bytes | None = None) -> Response:
    """One HTTP exchange; error statuses come back as Responses too (the caller decides)."""
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        raw = _opener.open(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as exc:  # 3xx (redirects are not followed here), 4xx, 5xx
        raw = exc
    return Response(raw.status if hasattr(raw, "status") else raw.code,
                    {k.lower(): v for k, v in raw.headers.items()}, raw)


def _server_error(response: Response) -> ServerError:
    body = response.read()
    response.close()
    try:
        error = json.loads(body)["error"]
        code, message, fields = error.get("code", "error"), error.get("message", ""), error.get("fields")
    except (ValueError, KeyError, TypeError):
        code, message, fields = "http_error", body[:200].decode("utf-8", "replace"), None
    retry = response.headers.get("retry-after")
    return ServerError(response.status, code, message, retry_after=int(retry) if retry and retry.isdigit() else None,
                       fields=fields)


# --- the client ----------------------------------------------------------------------------------


@dataclass
class DownloadResult:
    """What ``download()`` did: the verified file, and how its bytes arrived."""

    path: Path
    version: int
    via: str  # "delta", "full", "resumed" or "cached" (already installed)
    bytes_transferred: int


@dataclass
class _Installed:
    version: int
    format: str
    variant: str
    sha256: str
    file: str  # a name under cache_dir
    input: dict = field(default_factory=dict)
    labels: list = field(default_factory=list)
    tensors: dict = field(default_factory=dict)  # a tflite entry's input/output tensors, as the manifest said


class ModelClient:
    """One model on one channel for one install, with its files and state under ``cache_dir``.

    ``formats`` lists the file formats this app can run, preferred first (e.g. ``("pte",
    "onnx")``). ``conditions`` returns the device's current NetworkState; ``clock`` returns
    wall seconds (tests move it to cross the poll interval).
    """

    def __init__(self, base_url: str, app_key: str, model: str, install_id: str, cache_dir: str | Path,
                 app_version: str, platform: str, formats: Iterable[str], channel: str = "stable",
                 conditions: Callable[[], NetworkState] = lambda: NetworkState(wifi=True, charging=True),
                 clock: Callable[[], float] = time.time):
        if not INSTALL_ID.match(install_id):
            raise ValueError("install_id must be 8 to 128 characters of A-Z a-z 0-9 _ -")
        self.base_url = base_url.rstrip("/")
        self.app_key, self.model, self.install_id = app_key, model, install_id
        self.app_version, self.platform, self.channel = app_version, platform, channel
        self.formats = tuple(formats)
        self.conditions, self.clock = conditions, clock
        self.cache_dir = Path(cache_dir)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self._state_path = self.cache_dir / f"{model}.{channel}.state.json"
        self.state: dict = self._state_load()
        #: The HTTP status of the last check (200, 304), or None when it answered from memory.
        self.last_status: int | None = None
        #: Events not yet reported (``report()`` sends them).
        self.pending_events: list[dict] = []
        self._session = None  # the loaded model: (kind, runtime object, input name)
        #: Why the last offered delta was not used (None: it was, or none was offered).
        self.last_delta_error: Exception | None = None
        self._latencies: list[float] = []

    # -- state ----------------------------------------------------------------------------------

    def _state_load(self) -> dict:
        try:
            return json.loads(self._state_path.read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def _state_save(self) -> None:
        _atomic_write(self._state_path, json.dumps(self.state, indent=1, sort_keys=True).encode())

    @property
    def manifest(self) -> dict | None:
        """The last manifest the server sent (kept across restarts)."""
        return self.state.get("manifest")

    @property
    def installed(self) -> _Installed | None:
        """The verified file in use, if any."""
        found = self.state.get("installed")
        return _Installed(**found) if found else None

    @property
    def bucket(self) -> int:
        return bucket_of(salt=f"{self.model}/{self.channel}", install_id=self.install_id)

    def _headers(self, **extra: str) -> dict[str, str]:
        """What every request to our own server carries (never sent to a third party)."""
        return {APP_KEY_HEADER: self.app_key, INSTALL_ID_HEADER: self.install_id, **extra}

    # -- 1. check -------------------------------------------------------------------------------

    def check(self, *, force: bool = False) -> dict | None:
        """Ask the server whether there is news; return the current manifest (None: never got one).

        Within ``poll_interval_seconds`` of the last answer nothing is sent (unless ``force``).
        A ``304`` keeps the stored manifest; a ``200`` replaces it and its ETag. A manifest
        whose ``version`` is null means "keep what you have".
        """
        manifest = self.manifest
        checked_at = self.state.get("checked_at")
        if manifest is not None and checked_at is not None and not force:
            interval = manifest.get("poll_interval_seconds") or 0
            if self.clock() < checked_at + interval:
                self.last_status = None
                return manifest
        query = {
            "install_id": self.install_id, "app_version": self.app_version, "platform": self.platform,
            "formats": ",".join(self.formats), "channel": self.channel,
        }
        if self.installed is not None:
            query["current_version"] = str(self.installed.version)
        path = f"{API_PREFIX}/models/{urllib.parse.quote(self.model)}/update"
        url = f"{self.base_url}{path}?{urllib.parse.urlencode(query)}"
        headers = self._headers(Accept="application/json")
        if manifest is not None and self.state.get("etag"):
            headers["If-None-Match"] = self.state["etag"]
        response = _request("GET", url, headers=headers)
        if response.status == 304:
            response.close()
        elif response.status == 200:
            manifest = json.loads(response.read())
            response.close()
            self.state["manifest"] = manifest
            self.state["etag"] = response.headers.get("etag")
        else:
            raise _server_error(response)
        self.last_status = response.status
        self.state["checked_at"] = self.clock()
        self._state_save()
        return manifest

    def check_static(self, url: str, *, force: bool = False) -> dict | None:
        """``check()`` through the static channel manifest (a CDN or nginx), without Django.

        Same contract: at most once per ``poll_interval_seconds``, ``If-None-Match`` with the
        document's ETag, and the same manifest as the update endpoint (``manifest_from_document``).
        The app key is sent only when the URL is on our own server's origin.
        """
        manifest = self.manifest
        checked_at = self.state.get("checked_at")
        if manifest is not None and checked_at is not None and not force:
            if self.clock() < checked_at + (manifest.get("poll_interval_seconds") or 0):
                self.last_status = None
                return manifest
        same_origin = urllib.parse.urlsplit(url)[:2] == urllib.parse.urlsplit(self.base_url)[:2]
        headers = {**(self._headers() if same_origin else {}), "Accept": "application/json"}
        document = self.state.get("static_document")
        if document is not None and self.state.get("static_etag"):
            headers["If-None-Match"] = self.state["static_etag"]
        response = _request("GET", url, headers=headers)
        if response.status == 304 and document is not None:
            response.close()
        elif response.status == 200:
            document = json.loads(response.read())
            response.close()
            self.state["static_document"] = document
            self.state["static_etag"] = response.headers.get("etag")
        else:
            raise _server_error(response)
        installed = self.installed
        manifest = manifest_from_document(document, install_id=self.install_id, platform=self.platform,
                                          app_version=self.app_version, formats=self.formats,
                                          current_version=installed.version if installed else None)
        self.last_status = response.status
        self.state["manifest"] = manifest
        self.state["checked_at"] = self.clock()
        self._state_save()
        return manifest

    # -- 2. download ----------------------------------------------------------------------------

    def artifact_choose(self, manifest: dict | None = None) -> dict:
        """The recommended file of the first format in ``formats`` the manifest offers."""
        manifest = manifest or self.manifest
        if not manifest or manifest.get("version") is None:
            raise NoUpdate("no release for this install (check() first; null version: keep what you have)")
        artifacts = manifest.get("artifacts") or []
        for fmt in self.formats:
            offered = [a for a in artifacts if a.get("format") == fmt]
            if offered:
                return next((a for a in offered if a.get("recommended")), offered[0])
        raise NoUpdate(f"the release offers none of the formats {list(self.formats)}")

    def file_path(self, version: int, artifact: dict) -> Path:
        """Where a version's file lives: its own folder, so companions of two versions never collide.

        ``<cache_dir>/<model>-v<version>-<format>-<variant>/<same>.<ext>``; an interrupted
        download is ``<that>.part`` beside it.
        """
        stem = f"{self.model}-v{version}-{artifact['format']}-{artifact['variant']}"
        return self.cache_dir / stem / (stem + FILE_EXTENSIONS.get(artifact["format"], "." + artifact["format"]))

    def _allow(self, size: int) -> None:
        refusal = download_refusal((self.manifest or {}).get("download") or {}, self.conditions(), size=size)
        if refusal:
            raise DownloadNotAllowed(refusal)

    def download(self) -> DownloadResult:
        """Fetch and verify the chosen file of the current manifest; install it atomically.

        Order of preference: already installed (nothing to do) -> a delta from the installed
        file -> the full file (resumed from a ``.part`` if one is there). Raises
        DownloadNotAllowed when the conditions forbid the transfer now (try again later).
        """
        manifest = self.manifest
        artifact = self.artifact_choose(manifest)
        version = manifest["version"]
        target = self.file_path(version, artifact)
        target.parent.mkdir(parents=True, exist_ok=True)
        installed = self.installed
        if installed and installed.sha256 == artifact["sha256"] and (self.cache_dir / installed.file).exists():
            return DownloadResult(self.cache_dir / installed.file, installed.version, "cached", 0)

        result, self.last_delta_error = None, None
        delta = self._delta_offered(artifact, installed)
        if delta is not None:
            self._allow(int(delta["size"]) + self._companions_size(artifact, target.parent))
            result = self._delta_apply(delta, artifact, installed, target, version)
        if result is None:
            self._allow(int(artifact["size"]) + self._companions_size(artifact, target.parent))
            result = self._full_download(artifact, target, version)
        self._companions_fetch(artifact, target.parent)
        self._install(result, artifact, manifest)
        self.pending_events.append(self._event("downloaded"))
        return result

    def _delta_offered(self, artifact: dict, installed: _Installed | None) -> dict | None:
        if installed is None or not (self.cache_dir / installed.file).exists():
            return None
        for delta in artifact.get("deltas") or []:
            if (delta.get("from_version") == installed.version and delta.get("from_sha256") == installed.sha256
                    and delta.get("algorithm") == "bsdiff4"):
                return delta
        return None

    def _delta_apply(self, delta: dict, artifact: dict, installed: _Installed, target: Path,
                     version: int) -> DownloadResult | None:
        """Download the patch and apply it to the installed file; None on any failure (fall back)."""
        try:
            import bsdiff4

            response = self._get(delta["download_url"])
            patch = response.read(int(delta["size"]) + 1)  # one more byte shows a longer answer
            response.close()
            if hashlib.sha256(patch).hexdigest() != delta["sha256"]:
                raise IntegrityError("the patch's sha256 does not match the manifest")
            old = (self.cache_dir / installed.file).read_bytes()
            if hashlib.sha256(old).hexdigest() != installed.sha256:
                raise IntegrityError("the installed file changed on disk")
            new = bsdiff4.patch(old, patch)
            if len(new) != artifact["size"] or hashlib.sha256(new).hexdigest() != artifact["sha256"]:
                raise IntegrityError("the patched file's sha256 does not match the manifest")
        except Exception as exc:  # any error: the full file is always the safe way
            self.last_delta_error = exc
            return None
        _atomic_write(target, new)
        return DownloadResult(target, version, "delta", len(patch))

    def _get(self, url: str, *, extra: dict[str, str] | None = None) -> Response:
        """GET a file from our server, following at most a few redirects (presigned S3 URLs).

        The app key goes only to our own origin: a presigned URL is its own credential, and a
        third party must never see the key.
        """
        origin = urllib.parse.urlsplit(self.base_url)[:2]
        for _ in range(5):
            same_origin = urllib.parse.urlsplit(url)[:2] == origin
            headers = {**(self._headers() if same_origin else {}), **(extra or {})}
            response = _request("GET", url, headers=headers)
            if response.status in (301, 302, 303, 307, 308):
                response.close()
                url = urllib.parse.urljoin(url, response.headers["location"])
                continue
            if response.status in (200, 206, 416):
                return response
            raise _server_error(response)
        raise ClientError("too many redirects")

    def _full_download(self, artifact: dict, target: Path, version: int) -> DownloadResult:
        """The full file into ``<target>.part`` (resumed with Range), verified, renamed into place."""
        part = target.with_name(target.name + ".part")
        for attempt in range(2):  # a second, fresh attempt when a resumed file does not verify
            have = part.stat().st_size if part.exists() else 0
            if have > artifact["size"]:
                part.unlink()
                have = 0
            response = self._get(artifact["download_url"], extra={"Range": f"bytes={have}-"} if have else None)
            via, transferred = ("resumed" if have else "full"), 0
            if response.status == 416:
                # Nothing after byte `have`: either the .part is already complete or it is junk.
                response.close()
                if have != artifact["size"]:
                    part.unlink()
                    continue
            else:
                mode = "ab"
                if response.status == 200:  # the server ignored the range: start over
                    mode, via = "wb", "full"
                elif not response.headers.get("content-range", "").startswith(f"bytes {have}-"):
                    response.close()
                    part.unlink()
                    continue
                with open(part, mode) as fh:
                    while chunk := response.body.read(CHUNK):
                        fh.write(chunk)
                        transferred += len(chunk)
                response.close()
            if part.stat().st_size == artifact["size"] and file_sha256(part) == artifact["sha256"]:
                os.replace(part, target)
                return DownloadResult(target, version, via, transferred)
            part.unlink()  # never keep bytes that do not verify
            if attempt == 0 and have == 0:
                break  # a fresh full download did not verify: retrying would not help
        raise IntegrityError(f"{artifact['download_url']}: the downloaded file's sha256 does not match the manifest")

    def _companions_size(self, artifact: dict, folder: Path) -> int:
        return sum(int(c["size"]) for c in artifact.get("companions") or [] if not self._companion_ok(c, folder))

    @staticmethod
    def _companion_ok(companion: dict, folder: Path) -> bool:
        path = folder / Path(companion["name"]).name
        return path.exists() and path.stat().st_size == companion["size"] and file_sha256(path) == companion["sha256"]

    def _companions_fetch(self, artifact: dict, folder: Path) -> None:
        """Files the model needs beside it (ONNX external weights), under the names the model refers to."""
        for companion in artifact.get("companions") or []:
            if self._companion_ok(companion, folder):
                continue
            response = self._get(companion["download_url"])
            data = response.read(int(companion["size"]) + 1)
            response.close()
            if hashlib.sha256(data).hexdigest() != companion["sha256"]:
                raise IntegrityError(f"companion {companion['name']}: sha256 does not match the manifest")
            # Only the base name: a manifest must not be able to write outside the folder.
            _atomic_write(folder / Path(companion["name"]).name, data)

    def _install(self, result: DownloadResult, artifact: dict, manifest: dict) -> None:
        """Point the state at the new file; keep the previous one (deltas start from it), drop older."""
        previous = self.state.get("installed")
        self.state["previous"] = previous
        self.state["installed"] = {
            "version": result.version, "format": artifact["format"], "variant": artifact["variant"],
            "sha256": artifact["sha256"], "file": result.path.relative_to(self.cache_dir).as_posix(),
            "input": artifact.get("input") or manifest.get("input") or {}, "labels": manifest.get("labels") or [],
            "tensors": artifact.get("tensors") or {},
        }
        self._state_save()
        keep = {result.path.parent.name, previous["file"].split("/")[0] if previous else None}
        for folder in self.cache_dir.glob(f"{self.model}-v*"):
            # Older versions go; a folder with a .part in it is a download to resume later.
            if folder.is_dir() and folder.name not in keep and not any(folder.glob("*.part")):
                shutil.rmtree(folder, ignore_errors=True)
        self._session = None

    # -- 3. load --------------------------------------------------------------------------------

    def load(self) -> None:
        """Open the installed file with its runtime (reports ``loaded`` or ``load_failed``)."""
        installed = self.installed
        if installed is None:
            raise NoUpdate("nothing installed (download() first)")
        path = self.cache_dir / installed.file
        try:
            if installed.format == "onnx":
                import onnxruntime as ort

                options = ort.SessionOptions()
                options.intra_op_num_threads = min(2, os.cpu_count() or 1)  # what a phone gives a model
                session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
                self._session = ("onnx", session, session.get_inputs()[0].name)
            elif installed.format == "pte":
                # The runtime core as an app links it (XNNPACK delegate included in the wheel).
                from executorch.extension.pybindings.portable_lib import _load_for_executorch

                self._session = ("pte", _load_for_executorch(str(path)), None)
            elif installed.format == "tflite":
                try:
                    from ai_edge_litert.interpreter import Interpreter
                except ImportError as exc:
                    raise ClientError("a .tflite model needs the LiteRT runtime: pip install ai-edge-litert") from exc
                interpreter = Interpreter(model_path=str(path), num_threads=min(2, os.cpu_count() or 1))
                interpreter.allocate_tensors()
                tflite_tensors_check(interpreter, installed.tensors)  # its layout and quantization as stated
                self._session = ("tflite", interpreter, None)
            elif installed.format == "mlpackage":
                raise ClientError("Core ML packages run on Apple platforms only (MLModel); choose another format here")
            else:
                raise UnsupportedPreprocessing(f"no runtime for format {installed.format!r}")
        except Exception as exc:
            self.pending_events.append(self._event("load_failed", error_class=type(exc).__name__))
            raise
        self.pending_events.append(self._event("loaded"))

    # -- 4. classify ----------------------------------------------------------------------------

    def classify(self, image_path: str | Path) -> tuple[str, list[float]]:
        """(top label, probabilities in the manifest's label order) for one photo file."""
        installed = self.installed
        if self._session is None:
            self.load()
        spec = InputSpec.from_manifest(installed.input)
        with Image.open(image_path) as image:
            # A camera file may be stored sideways with an EXIF orientation; the model was
            # trained on upright photos (the server transposes uploads the same way).
            batch = image_to_input(ImageOps.exif_transpose(image), spec)
        start = time.perf_counter()
        kind, runtime, input_name = self._session
        if kind == "onnx":
            output = runtime.run(None, {input_name: batch})[0]
        elif kind == "tflite":
            output = tflite_invoke(runtime, batch, layout=spec.layout)
        else:
            import torch

            output = runtime.forward((torch.from_numpy(batch),))[0].numpy().copy()
        self._latencies.append((time.perf_counter() - start) * 1000.0)
        scores = np.asarray(output, dtype=np.float64).reshape(-1)
        probabilities = softmax(scores) if spec.output in ("logits", "scores") else scores
        labels = installed.labels
        if len(labels) != len(probabilities):
            raise ClientError(f"the model returned {len(probabilities)} scores for {len(labels)} labels")
        return labels[int(np.argmax(probabilities))], [float(p) for p in probabilities]

    # -- 5. report ------------------------------------------------------------------------------

    def _event(self, event: str, **extra: Any) -> dict:
        installed = self.installed
        return {"version": installed.version, "format": installed.format, "variant": installed.variant,
                "event": event, **extra}

    def report(self, events: list[dict] | None = None) -> int:
        """POST telemetry; with no ``events``, what this client recorded since the last report.

        Returns the status (202). Recorded events are dropped only once the server took them.
        """
        recorded = events is None
        if recorded:
            events = list(self.pending_events)
            if self._latencies and self.installed is not None:
                latencies = [round(v, 3) for v in self._latencies[-MAX_LATENCY_SAMPLES:]]
                events.append(self._event("inference", latency_ms=latencies))
        if not events:
            return 202
        body = json.dumps({"install_id": self.install_id, "channel": self.channel, "events": events}).encode()
        url = f"{self.base_url}{API_PREFIX}/models/{urllib.parse.quote(self.model)}/telemetry"
        response = _request("POST", url, headers=self._headers(**{"Content-Type": "application/json"}), data=body)
        if response.status != 202:
            raise _server_error(response)
        response.close()
        if recorded:
            self.pending_events.clear()
            self._latencies.clear()
        return response.status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Poll, download, verify and run a model; classify photos.")
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--key", required=True, help="the app key (X-App-Key)")
    parser.add_argument("--model", required=True)
    parser.add_argument("--channel", default="stable")
    parser.add_argument("--install-id", default=None, help="default: one generated and kept in the cache dir")
    parser.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "model-client"))
    parser.add_argument("--formats", default="onnx,pte")
    parser.add_argument("--app-version", default="1.0.0")
    parser.add_argument("--platform", default="android")
    parser.add_argument("--cellular", action="store_true", help="pretend to be on a metered network")
    parser.add_argument("--force", action="store_true", help="check now even within the poll interval")
    parser.add_argument("images", nargs="*")
    args = parser.parse_args(argv)

    cache = Path(args.cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    id_file = cache / "install_id"
    install_id = args.install_id or (id_file.read_text().strip() if id_file.exists() else None)
    if install_id is None:
        import uuid

        install_id = str(uuid.uuid4())
        id_file.write_text(install_id)
    client = ModelClient(args.base_url, args.key, args.model, install_id, cache, args.app_version, args.platform,
                         args.formats.split(","), channel=args.channel,
                         conditions=lambda: NetworkState(wifi=not args.cellular, charging=True))
    manifest = client.check(force=args.force)
    print(f"check: {client.last_status or 'skipped (poll interval)'}; version {manifest and manifest.get('version')}; "
          f"bucket {client.bucket}")
    try:
        result = client.download()
        print(f"download: v{result.version} via {result.via} ({result.bytes_transferred} bytes) -> {result.path}")
    except (NoUpdate, DownloadNotAllowed) as exc:
        print(f"download: {exc}")
    if args.images and client.installed is not None:
        for image in args.images:
            label, probabilities = client.classify(image)
            print(f"{image}: {label} {[round(p, 4) for p in probabilities]}")
    if client.installed is not None:
        print(f"report: {client.report()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
