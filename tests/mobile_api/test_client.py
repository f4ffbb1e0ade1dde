"""The reference client's pure parts, and its HTTP behaviour against a scripted stand-in server.

The stand-in (a stdlib HTTP server on loopback) answers exactly as PROTOCOL.md says, so
these tests pin the client's side of the contract without Django; the real server is in
tests/integration/test_client_e2e.py.
"""
from __future__ import annotations

import hashlib
import json
import random
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import bsdiff4
import numpy as np
import pytest
from PIL import Image

from mobile_api import client as mc
from mobile_api.rollout import Install, bucket_of, resolve
from training.ml.config import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from training.ml.images import image_to_array

# --- bucketing ------------------------------------------------------------------------------------


def test_bucket_agrees_with_the_server_on_1000_random_install_ids():
    rng = random.Random(6)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
    for _ in range(1000):
        install_id = "".join(rng.choice(alphabet) for _ in range(rng.randint(8, 128)))
        salt = rng.choice(["ants-bees/stable", "ants-bees/beta", "birds/stable"])
        assert mc.bucket_of(salt=salt, install_id=install_id) == bucket_of(salt=salt, install_id=install_id)


def _random_state(rng: random.Random) -> dict:
    releases = []
    for version in range(rng.randint(0, 4), 0, -1):
        low = rng.choice(["", "", "2.0", "2.10.1"])
        releases.append({
            "release_id": version, "version": version, "state": rng.choice(["active", "active", "paused"]),
            "rollout_percent": rng.choice([0, 5, 50, 100]),
            "platforms": rng.choice([[], [], ["android"], ["ios"]]),
            "formats": rng.choice([["onnx", "pte"], ["onnx"], ["pte"], []]),
            "min_app_version": low, "max_app_version": rng.choice(["", "", "3", "2.9"]),
        })
    return {"salt": rng.choice(["ants-bees/stable", "ants-bees/beta"]), "releases": releases}


def test_release_resolution_agrees_with_the_server_rule():
    rng = random.Random(7)
    for n in range(1000):
        state = _random_state(rng)
        install = Install(
            install_id=f"install-{n:06d}", app_version=rng.choice(["1.9", "2.0.0", "2.9", "2.10.1", "3.0.1"]),
            platform=rng.choice(["android", "ios"]), formats=tuple(rng.sample(["onnx", "pte"], rng.randint(1, 2))),
            current_version=rng.choice([None, 1, 2, 3]),
        )
        expected = resolve(state, install)
        got = mc.release_resolve(state, install_id=install.install_id, platform=install.platform,
                                 app_version=install.app_version, formats=install.formats,
                                 current_version=install.current_version)
        assert got is expected, (state, install)


# --- preprocessing ----------------------------------------------------------------------------------


def _photos(root: Path, count: int) -> list[Path]:
    """A few real photos of both labels, of varied sizes and aspect ratios."""
    return sorted((root / "val").glob("*/*.jpg"))[::17][:count]


@pytest.mark.parametrize("preprocessing", [
    Preprocessing(),
    Preprocessing(input_size=160, resize=183, mean=IMAGENET_MEAN, std=IMAGENET_STD),
    Preprocessing(input_size=8, resize=8),
], ids=["default", "student-imagenet", "tiny"])
def test_preprocessing_matches_the_training_reference_on_real_photos(preprocessing, hymenoptera):
    spec = mc.InputSpec.from_manifest(preprocessing.to_manifest())
    for path in _photos(hymenoptera, 4):
        with Image.open(path) as image:
            expected = image_to_array(image, preprocessing=preprocessing)
            got = mc.image_to_input(image, spec)
        assert got.shape == (1, *expected.shape) and got.dtype == np.float32
        np.testing.assert_allclose(got[0], expected, atol=1e-5, rtol=0)


def test_preprocessing_of_odd_images_matches_the_reference():
    preprocessing = Preprocessing(input_size=32, resize=40)
    spec = mc.InputSpec.from_manifest(preprocessing.to_manifest())
    rng = np.random.default_rng(0)
    images = [
        Image.fromarray(rng.integers(0, 256, (50, 37, 4), dtype=np.uint8), "RGBA"),  # alpha onto white
        Image.fromarray(rng.integers(0, 256, (41, 90), dtype=np.uint8), "L"),
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8), "RGB"),  # no resize needed
    ]
    for image in images:
        expected = image_to_array(image, preprocessing=preprocessing)
        np.testing.assert_allclose(mc.image_to_input(image, spec)[0], expected, atol=1e-5, rtol=0)


def test_channel_order_and_layout_are_honoured():
    image = Image.new("RGB", (8, 8), (10, 20, 30))
    base = Preprocessing(input_size=8, resize=8).to_manifest()
    nchw = mc.image_to_input(image, mc.InputSpec.from_manifest(base))
    nhwc_bgr = mc.image_to_input(image, mc.InputSpec.from_manifest({**base, "layout": "NHWC", "channel_order": "BGR"}))
    assert nhwc_bgr.shape == (1, 8, 8, 3)
    np.testing.assert_array_equal(nhwc_bgr[0, :, :, ::-1].transpose(2, 0, 1), nchw[0])


def test_the_protocol_example_input_is_understood():
    spec = mc.InputSpec.from_manifest({
        "input_size": 224, "resize": 256, "resize_mode": "shorter_side_bilinear_antialias", "crop": "center",
        "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "channel_order": "RGB", "layout": "NCHW", "scale": "0..1",
    })
    assert (spec.input_size, spec.resize, spec.mean) == (224, 256, (0.5, 0.5, 0.5))


@pytest.mark.parametrize("change", [
    {"gamma": 2.2},  # an unknown key
    {"resize_mode": "shorter_side_bicubic"},
    {"resize_mode": "shorter_side_bilinear"},  # bilinear without antialiasing: other pixels
    {"crop": "none"},
    {"layout": "CHW"},
    {"scale": 1.0},
    {"dtype": "float16"},
    {"output": "embedding"},
    {"std": [0.5, 0.0, 0.5]},
])
def test_an_input_spec_the_client_cannot_reproduce_is_refused(change):
    with pytest.raises(mc.UnsupportedPreprocessing):
        mc.InputSpec.from_manifest({**Preprocessing().to_manifest(), **change})


# --- download conditions ---------------------------------------------------------------------------

WIFI, CELLULAR = mc.NetworkState(wifi=True, charging=False), mc.NetworkState(wifi=False, charging=True)


@pytest.mark.parametrize("conditions, state, size, allowed", [
    ({"wifi_only": False, "charging_only": False, "max_cellular_bytes": 100}, CELLULAR, 100, True),
    ({"wifi_only": False, "charging_only": False, "max_cellular_bytes": 100}, CELLULAR, 101, False),
    ({"wifi_only": False, "charging_only": False, "max_cellular_bytes": 0}, CELLULAR, 1, False),
    ({"wifi_only": False, "charging_only": False, "max_cellular_bytes": 0}, WIFI, 10**9, True),
    ({"wifi_only": True, "charging_only": False, "max_cellular_bytes": 10**9}, CELLULAR, 1, False),
    ({"wifi_only": True, "charging_only": False, "max_cellular_bytes": 0}, WIFI, 10**9, True),
    ({"wifi_only": False, "charging_only": True, "max_cellular_bytes": 10**9}, WIFI, 1, False),
    ({"wifi_only": False, "charging_only": True, "max_cellular_bytes": 10**9}, CELLULAR, 1, True),
])
def test_download_conditions(conditions, state, size, allowed):
    assert (mc.download_refusal(conditions, state, size=size) is None) is allowed


# --- a scripted stand-in server --------------------------------------------------------------------


class StandIn:
    """A loopback HTTP server: ``routes[path] = fn(handler) -> (status, headers, body)``; logs requests."""

    def __init__(self):
        self.routes: dict = {}
        self.log: list[tuple[str, str, dict, bytes]] = []
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self):
                path = self.path.split("?", 1)[0]
                length = int(self.headers.get("Content-Length") or 0)
                self.body = self.rfile.read(length) if length else b""
                stand_in.log.append((self.command, self.path, dict(self.headers), self.body))
                route = stand_in.routes.get(path)
                status, headers, body = route(self) if route else (404, {}, b"{}")
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _serve

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def requests_to(self, path: str) -> list[dict]:
        return [headers for _, p, headers, _ in self.log if p.split("?", 1)[0] == path]


def file_route(data: bytes):
    """A download as PROTOCOL.md says: 200, or 206 for ``Range: bytes=N-``, 416 past the end."""

    def route(handler):
        headers = {"ETag": f'"{hashlib.sha256(data).hexdigest()}"', "Accept-Ranges": "bytes"}
        wanted = handler.headers.get("Range")
        if not wanted:
            return 200, headers, data
        start = int(wanted.removeprefix("bytes=").rstrip("-"))
        if start >= len(data):
            return 416, {"Content-Range": f"bytes */{len(data)}"}, b""
        return 206, {**headers, "Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"}, data[start:]

    return route


@pytest.fixture
def server():
    stand_in = StandIn()
    yield stand_in
    stand_in.httpd.shutdown()
    stand_in.httpd.server_close()


UPDATE = "/api/mobile/v1/models/ants-bees/update"
TELEMETRY = "/api/mobile/v1/models/ants-bees/telemetry"


def manifest_for(server, version: int, data: bytes, *, deltas=(), download=None) -> dict:
    url = f"{server.url}/files/v{version}.onnx"
    server.routes[f"/files/v{version}.onnx"] = file_route(data)
    return {
        "model": "ants-bees", "channel": "stable", "version": version, "reason": None,
        "labels": ["ants", "bees"], "input": Preprocessing(input_size=8, resize=8).to_manifest(),
        "artifacts": [
            {"format": "pte", "variant": "fp32", "recommended": True, "size": 1, "sha256": "0" * 64,
             "download_url": f"{server.url}/nope", "deltas": []},
            {"format": "onnx", "variant": "int8", "recommended": False, "size": 1, "sha256": "0" * 64,
             "download_url": f"{server.url}/nope", "deltas": []},
            {"format": "onnx", "variant": "fp32", "recommended": True, "size": len(data),
             "sha256": hashlib.sha256(data).hexdigest(), "download_url": url, "deltas": list(deltas),
             "input": Preprocessing(input_size=8, resize=8).to_manifest(), "companions": []},
        ],
        "download": download or {"wifi_only": False, "charging_only": False, "max_cellular_bytes": 20 * 1024 * 1024},
        "poll_interval_seconds": 3600,
    }


def serve_manifest(server, manifest: dict, etag: str) -> None:
    def route(handler):
        if handler.headers.get("If-None-Match") == etag:
            return 304, {"ETag": etag}, b""
        return 200, {"ETag": etag, "Content-Type": "application/json"}, json.dumps(manifest).encode()

    server.routes[UPDATE] = route


class Clock:
    def __init__(self):
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def make_client(server, tmp_path, *, state=mc.NetworkState(), clock=None) -> mc.ModelClient:
    return mc.ModelClient(server.url, "mk_test_secret", "ants-bees", "install-0001", tmp_path / "cache", "2.3.0",
                          "android", ["onnx"], conditions=lambda: state, clock=clock or Clock())


def partial(client: mc.ModelClient, version: int) -> Path:
    """The .part file of an interrupted download of the chosen file of ``version``."""
    path = client.file_path(version, client.artifact_choose())
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(path.name + ".part")


def test_check_sends_the_etag_gets_304_and_respects_the_poll_interval(server, tmp_path):
    serve_manifest(server, manifest_for(server, 1, b"one" * 100), '"e1"')
    clock = Clock()
    client = make_client(server, tmp_path, clock=clock)
    assert client.check()["version"] == 1 and client.last_status == 200
    first = server.requests_to(UPDATE)[0]
    assert first["X-App-Key"] == "mk_test_secret" and "If-None-Match" not in first
    assert "install_id=install-0001" in server.log[0][1] and "formats=onnx" in server.log[0][1]

    assert client.check()["version"] == 1 and client.last_status is None  # within the interval: no request
    assert len(server.requests_to(UPDATE)) == 1
    clock.now += 3600
    assert client.check()["version"] == 1 and client.last_status == 304
    assert server.requests_to(UPDATE)[-1]["If-None-Match"] == '"e1"'
    client.check(force=True)
    assert len(server.requests_to(UPDATE)) == 3

    # The ETag and manifest survive a restart of the app.
    clock.now += 3600
    again = make_client(server, tmp_path, clock=clock)
    assert again.check()["version"] == 1 and again.last_status == 304


def test_server_errors_raise_with_their_code(server, tmp_path):
    server.routes[UPDATE] = lambda h: (429, {"Retry-After": "17"}, json.dumps(
        {"error": {"code": "rate_limited", "message": "slow down", "fields": {}}}).encode())
    with pytest.raises(mc.ServerError) as caught:
        make_client(server, tmp_path).check()
    assert (caught.value.status, caught.value.code, caught.value.retry_after) == (429, "rate_limited", 17)


def test_download_verifies_and_installs_the_recommended_file_of_the_first_format(server, tmp_path):
    data = b"model one " * 1000
    serve_manifest(server, manifest_for(server, 1, data), '"e1"')
    client = make_client(server, tmp_path)
    client.check()
    result = client.download()
    assert (result.via, result.version, result.bytes_transferred) == ("full", 1, len(data))
    assert result.path.read_bytes() == data
    assert result.path.relative_to(client.cache_dir).as_posix() == "ants-bees-v1-onnx-fp32/ants-bees-v1-onnx-fp32.onnx"
    assert client.installed.sha256 == hashlib.sha256(data).hexdigest()
    assert client.download().via == "cached"
    assert [e["event"] for e in client.pending_events] == ["downloaded"]


def test_an_interrupted_download_resumes_with_a_range_request(server, tmp_path):
    data = bytes(range(256)) * 400
    serve_manifest(server, manifest_for(server, 1, data), '"e1"')
    client = make_client(server, tmp_path)
    client.check()
    part = partial(client, 1)
    part.write_bytes(data[: len(data) // 2])
    result = client.download()
    assert result.via == "resumed" and result.bytes_transferred == len(data) - len(data) // 2
    assert server.requests_to("/files/v1.onnx")[-1]["Range"] == f"bytes={len(data) // 2}-"
    assert result.path.read_bytes() == data and not part.exists()


def test_a_resumed_file_that_does_not_verify_is_downloaded_again_in_full(server, tmp_path):
    data = b"abcdefgh" * 500
    serve_manifest(server, manifest_for(server, 1, data), '"e1"')
    client = make_client(server, tmp_path)
    client.check()
    partial(client, 1).write_bytes(b"X" * 1000)  # junk from elsewhere
    result = client.download()
    assert result.via == "full" and result.path.read_bytes() == data
    assert [h.get("Range") for h in server.requests_to("/files/v1.onnx")] == ["bytes=1000-", None]


def test_a_file_that_never_verifies_is_refused(server, tmp_path):
    manifest = manifest_for(server, 1, b"good" * 100)
    server.routes["/files/v1.onnx"] = file_route(b"evil" * 100)
    serve_manifest(server, manifest, '"e1"')
    client = make_client(server, tmp_path)
    client.check()
    with pytest.raises(mc.IntegrityError):
        client.download()
    assert client.installed is None and list(client.cache_dir.glob("*/*.onnx*")) == []


def test_a_redirect_to_a_presigned_url_is_followed_without_the_app_key(server, tmp_path):
    data = b"presigned bytes " * 300
    third_party = StandIn()  # another origin, like an S3 endpoint
    try:
        third_party.routes["/bucket/v1.onnx"] = file_route(data)
        manifest = manifest_for(server, 1, data)
        presigned = f"{third_party.url}/bucket/v1.onnx?X-Sig=abc"
        server.routes["/files/v1.onnx"] = lambda h: (302, {"Location": presigned}, b"")
        serve_manifest(server, manifest, '"e1"')
        client = make_client(server, tmp_path)
        client.check()
        partial(client, 1).write_bytes(data[:1000])
        assert client.download().path.read_bytes() == data
        (sent,) = third_party.requests_to("/bucket/v1.onnx")
        assert "X-App-Key" not in sent and "X-Install-Id" not in sent and sent["Range"] == "bytes=1000-"
        assert server.requests_to("/files/v1.onnx")[0]["X-App-Key"] == "mk_test_secret"
    finally:
        third_party.httpd.shutdown()
        third_party.httpd.server_close()


def test_download_conditions_are_honoured_before_any_transfer(server, tmp_path):
    data = b"x" * 5000
    serve_manifest(server, manifest_for(server, 1, data, download={
        "wifi_only": False, "charging_only": False, "max_cellular_bytes": 4000}), '"e1"')
    client = make_client(server, tmp_path, state=CELLULAR)
    client.check()
    with pytest.raises(mc.DownloadNotAllowed, match="cellular"):
        client.download()
    assert server.requests_to("/files/v1.onnx") == []


def _install_then_offer_v2(server, tmp_path, *, patch: bytes, patch_sha: str | None = None, state=mc.NetworkState()):
    old = bytes(range(256)) * 64
    new = old[:5000] + b"a slightly different model" + old[5000:]
    serve_manifest(server, manifest_for(server, 1, old), '"e1"')
    clock = Clock()
    client = make_client(server, tmp_path, clock=clock, state=state)
    client.check()
    with_wifi = client.conditions
    client.conditions = lambda: mc.NetworkState()
    client.download()
    client.conditions = with_wifi
    server.routes["/files/v2.patch"] = lambda h: (200, {}, patch)
    delta = {"from_version": 1, "from_sha256": hashlib.sha256(old).hexdigest(), "algorithm": "bsdiff4",
             "size": len(patch), "sha256": patch_sha or hashlib.sha256(patch).hexdigest(),
             "download_url": f"{server.url}/files/v2.patch"}
    serve_manifest(server, manifest_for(server, 2, new, deltas=[delta], download={
        "wifi_only": False, "charging_only": False, "max_cellular_bytes": 2000}), '"e2"')
    clock.now += 3600
    assert client.check()["version"] == 2
    return client, old, new


def test_a_delta_from_the_installed_file_is_applied_and_verified(server, tmp_path):
    old = bytes(range(256)) * 64
    new = old[:5000] + b"a slightly different model" + old[5000:]
    client, _, _ = _install_then_offer_v2(server, tmp_path, patch=bsdiff4.diff(old, new))
    result = client.download()
    assert result.via == "delta" and result.path.read_bytes() == new
    assert server.requests_to("/files/v2.onnx") == []  # the full file was never fetched
    # The previous version's file stays (the next delta starts from it).
    folders = {p.name for p in client.cache_dir.glob("ants-bees-v*")}
    assert folders == {"ants-bees-v1-onnx-fp32", "ants-bees-v2-onnx-fp32"}


def test_a_delta_may_go_over_cellular_where_the_full_file_may_not(server, tmp_path):
    old = bytes(range(256)) * 64
    new = old[:5000] + b"a slightly different model" + old[5000:]
    client, _, _ = _install_then_offer_v2(server, tmp_path, patch=bsdiff4.diff(old, new), state=CELLULAR)
    assert client.download().via == "delta"


@pytest.mark.parametrize("tamper", ["patch_bytes", "wrong_base"])
def test_a_delta_that_does_not_verify_falls_back_to_the_full_file(server, tmp_path, tamper):
    old = bytes(range(256)) * 64
    new = old[:5000] + b"a slightly different model" + old[5000:]
    if tamper == "patch_bytes":  # the stored patch was altered: its sha256 no longer matches
        good = bsdiff4.diff(old, new)
        client, _, _ = _install_then_offer_v2(server, tmp_path, patch=good[:-10] + b"0123456789",
                                              patch_sha=hashlib.sha256(good).hexdigest())
    else:  # a well-formed patch that yields other bytes: the result's sha256 catches it
        client, _, _ = _install_then_offer_v2(server, tmp_path, patch=bsdiff4.diff(old, new + b"!"))
    result = client.download()
    assert result.via == "full" and result.path.read_bytes() == new
    assert isinstance(client.last_delta_error, mc.IntegrityError)


def test_report_posts_recorded_events(server, tmp_path):
    serve_manifest(server, manifest_for(server, 1, b"m" * 100), '"e1"')
    server.routes[TELEMETRY] = lambda h: (202, {}, b"{}")
    client = make_client(server, tmp_path)
    client.check()
    client.download()
    client._latencies = [float(i) for i in range(150)]
    assert client.report() == 202
    _, _, headers, body = server.log[-1]
    sent = json.loads(body)
    assert headers["X-App-Key"] == "mk_test_secret" and sent["install_id"] == "install-0001"
    assert [e["event"] for e in sent["events"]] == ["downloaded", "inference"]
    assert sent["events"][0] == {"version": 1, "format": "onnx", "variant": "fp32", "event": "downloaded"}
    assert len(sent["events"][1]["latency_ms"]) == 100
    assert client.pending_events == [] and client.report() == 202  # nothing left to send
    assert len(server.requests_to(TELEMETRY)) == 1


def test_a_malformed_install_id_is_refused(tmp_path):
    with pytest.raises(ValueError):
        mc.ModelClient("http://x", "k", "m", "short", tmp_path, "1.0", "android", ["onnx"])


STATIC = "/manifests/ants-bees/stable.json"


def static_document(server, version: int, data: bytes) -> dict:
    manifest = manifest_for(server, version, data)
    body = {k: manifest[k] for k in ("version", "labels", "input", "artifacts")}
    return {
        "schema": 1, "model": "ants-bees", "channel": "stable", "generation": 3, "salt": "ants-bees/stable",
        "poll_interval_seconds": 3600, "download": manifest["download"],
        "releases": [
            {"release_id": 9, "version": version, "state": "active", "rollout_percent": 100, "platforms": [],
             "formats": ["onnx", "pte"], "min_app_version": "", "max_app_version": "", "manifest": body},
        ],
    }


def test_check_static_resolves_the_release_from_a_cdn_document(server, tmp_path):
    document = static_document(server, 4, b"static model" * 50)

    def route(handler):
        if handler.headers.get("If-None-Match") == '"g3"':
            return 304, {"ETag": '"g3"'}, b""
        return 200, {"ETag": '"g3"', "Content-Type": "application/json"}, json.dumps(document).encode()

    server.routes[STATIC] = route
    clock = Clock()
    client = make_client(server, tmp_path, clock=clock)
    manifest = client.check_static(server.url + STATIC)
    assert client.last_status == 200 and manifest["version"] == 4
    assert [a["format"] for a in manifest["artifacts"]] == ["onnx", "onnx"]  # only what the install accepts
    assert manifest["rollout"] == {"bucket": client.bucket, "percent": 100, "release_state": "active"}
    assert client.download().path.read_bytes() == b"static model" * 50
    clock.now += 3600
    assert client.check_static(server.url + STATIC)["version"] == 4 and client.last_status == 304
    assert server.requests_to(STATIC)[-1]["If-None-Match"] == '"g3"'


def test_a_static_document_without_a_release_for_the_install_says_keep_what_you_have(server, tmp_path):
    document = static_document(server, 4, b"m" * 10)
    document["releases"][0]["platforms"] = ["ios"]
    server.routes[STATIC] = lambda h: (200, {"ETag": '"g3"'}, json.dumps(document).encode())
    manifest = make_client(server, tmp_path).check_static(server.url + STATIC)
    assert (manifest["version"], manifest["reason"]) == (None, "no_release_matches")


def test_a_model_with_external_weights_gets_its_companion_beside_it_and_runs(server, tmp_path):
    """ONNX files from the dynamo exporter keep their weights in a companion file the model names."""
    import onnx

    from tests.training.conftest import colour_classifier

    model = onnx.load_from_string(colour_classifier(["ants", "bees"]))
    onnx.save_model(model, tmp_path / "export.onnx", save_as_external_data=True, location="weights.onnx.data",
                    size_threshold=0)
    data, weights = (tmp_path / "export.onnx").read_bytes(), (tmp_path / "weights.onnx.data").read_bytes()
    manifest = manifest_for(server, 1, data)
    server.routes["/files/weights"] = file_route(weights)
    manifest["artifacts"][-1]["companions"] = [{
        "name": "weights.onnx.data", "size": len(weights), "sha256": hashlib.sha256(weights).hexdigest(),
        "download_url": f"{server.url}/files/weights"}]
    serve_manifest(server, manifest, '"e1"')
    client = make_client(server, tmp_path)
    client.check()
    result = client.download()
    assert (result.path.parent / "weights.onnx.data").read_bytes() == weights
    photo = tmp_path / "red.png"
    Image.new("RGB", (20, 12), (220, 20, 20)).save(photo)
    label, probabilities = client.classify(photo)
    assert label == "ants" and probabilities[0] > 0.9
    assert [e["event"] for e in client.pending_events] == ["downloaded", "loaded"]


@pytest.mark.slow
def test_an_executorch_file_loads_and_classifies_like_torch(server, tmp_path):
    """The .pte path: ExecuTorch's runtime (XNNPACK) gives the exported model's probabilities."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("executorch")
    from training.ml.compress import pte_export

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                torch.nn.Linear(4, 2), torch.nn.Softmax(dim=1))
    pte_export(model=model, path=tmp_path / "tiny.pte", input_size=8)
    data = (tmp_path / "tiny.pte").read_bytes()
    manifest = manifest_for(server, 1, data)
    manifest["artifacts"] = [{**manifest["artifacts"][-1], "format": "pte"}]
    serve_manifest(server, manifest, '"e1"')
    client = mc.ModelClient(server.url, "mk_test_secret", "ants-bees", "install-0001", tmp_path / "cache", "2.3.0",
                            "android", ["pte", "onnx"])
    client.check()
    assert client.download().path.suffix == ".pte"
    photo = tmp_path / "photo.png"
    Image.new("RGB", (16, 10), (30, 140, 220)).save(photo)
    _, probabilities = client.classify(photo)
    with Image.open(photo) as image:
        x = image_to_array(image, preprocessing=Preprocessing(input_size=8, resize=8))[np.newaxis]
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()[0]
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)


# --- TFLite files in either layout --------------------------------------------------------------

TINY_MODELS = Path(__file__).resolve().parents[1] / "training" / "tiny_models"


class RecordingInterpreter:
    """LiteRT's interpreter API (details, set_tensor, invoke, get_tensor), recording what it is fed."""

    def __init__(self, shape, dtype=np.float32, quantization=(0.0, 0), output=(0.25, 0.75)):
        self.input = {"index": 0, "shape": np.array(shape), "dtype": dtype, "quantization": quantization}
        self.fed, self.output = None, np.array([output], dtype=np.float32)

    def get_input_details(self):
        return [self.input]

    def get_output_details(self):
        return [{"index": 1, "shape": np.array(self.output.shape), "dtype": np.float32, "quantization": (0.0, 0)}]

    def set_tensor(self, index, value):
        assert index == 0 and value.dtype == np.dtype(self.input["dtype"])
        self.fed = value.copy()

    def invoke(self):
        pass

    def get_tensor(self, index):
        return self.output


def test_the_layout_of_a_tflite_input_is_read_from_its_shape():
    assert mc.tensor_layout([1, 3, 224, 224]) == "NCHW"
    assert mc.tensor_layout(np.array([1, 192, 192, 3])) == "NHWC"
    for shape in ([1, 3, 3, 3], [1, 224, 224], [1, 4, 8, 8]):
        with pytest.raises(mc.UnsupportedPreprocessing):
            mc.tensor_layout(shape)


@pytest.mark.parametrize("given", ["NCHW", "NHWC"])
def test_an_nhwc_tflite_input_gets_the_pixels_transposed_not_reshaped(given):
    image = Image.fromarray(np.random.default_rng(3).integers(0, 256, (6, 6, 3), dtype=np.uint8))
    spec = {"input_size": 6, "resize": 6, "mean": [0.5] * 3, "std": [0.5] * 3}
    nhwc = mc.image_to_input(image, mc.InputSpec.from_manifest({**spec, "layout": "NHWC"}))
    batch = mc.image_to_input(image, mc.InputSpec.from_manifest({**spec, "layout": given}))
    interpreter = RecordingInterpreter([1, 6, 6, 3])
    np.testing.assert_array_equal(mc.tflite_invoke(interpreter, batch, layout=given), [[0.25, 0.75]])
    np.testing.assert_array_equal(interpreter.fed, nhwc)  # pixel (row, column) keeps its 3 channels


def test_an_int8_nhwc_tflite_input_is_quantized_with_the_files_scale_and_zero_point():
    x = np.linspace(-1, 1, 2 * 2 * 3, dtype=np.float32).reshape(1, 2, 2, 3)
    interpreter = RecordingInterpreter([1, 2, 2, 3], dtype=np.int8, quantization=(1 / 127.5, -1))
    mc.tflite_invoke(interpreter, x.transpose(0, 3, 1, 2), layout="NCHW")
    assert interpreter.fed.dtype == np.int8
    np.testing.assert_array_equal(interpreter.fed, np.clip(np.round(x * 127.5 - 1), -128, 127))
    with pytest.raises(mc.ClientError, match=r"takes \[1, 2, 2, 3\]"):
        mc.tflite_invoke(interpreter, np.zeros((1, 3, 4, 4), dtype=np.float32))


def test_a_tflite_file_whose_input_is_not_the_manifests_is_refused():
    interpreter = RecordingInterpreter([1, 8, 8, 3], dtype=np.int8, quantization=(0.0078, -1))
    stated = {"name": "x", "shape": [1, 8, 8, 3], "dtype": "int8", "quantization": {"scale": 0.0078, "zero_point": -1}}
    mc.tflite_tensors_check(interpreter, {"inputs": [stated]})
    mc.tflite_tensors_check(interpreter, {})  # an older manifest without tensors: the file's own details rule
    for change in ({"shape": [1, 3, 8, 8]}, {"dtype": "float32"}, {"quantization": {"scale": 0.5, "zero_point": -1}}):
        with pytest.raises(mc.IntegrityError):
            mc.tflite_tensors_check(interpreter, {"inputs": [{**stated, **change}]})


def test_an_imported_nhwc_tflite_file_is_downloaded_and_run_by_the_client(server, tmp_path):
    """A TFLite file made outside the pipeline (litert-torch, NHWC input) with the manifest an import gets."""
    pytest.importorskip("ai_edge_litert")
    data = (TINY_MODELS / "colours-nhwc-labels.tflite").read_bytes()
    manifest = manifest_for(server, 1, data)
    tensors = {"inputs": [{"name": "args_0", "shape": [1, 8, 8, 3], "dtype": "float32", "quantization": None}],
               "outputs": [{"name": "output_0", "shape": [1, 2], "dtype": "float32", "quantization": None}]}
    nhwc = {**Preprocessing(input_size=8, resize=8).to_manifest(), "layout": "NHWC", "output": "probabilities"}
    manifest["artifacts"] = [{**manifest["artifacts"][-1], "format": "tflite", "variant": "fp32",
                              "runtime": "litert", "input": nhwc, "tensors": tensors}]
    serve_manifest(server, manifest, '"e1"')
    client = mc.ModelClient(server.url, "mk_test_secret", "ants-bees", "install-0001", tmp_path / "cache", "2.3.0",
                            "android", ["tflite"])
    client.check()
    assert client.download().path.suffix == ".tflite"
    for colour, expected in (((220, 20, 20), "ants"), ((20, 20, 220), "bees"), ((200, 40, 60), "ants")):
        photo = tmp_path / "photo.png"
        Image.new("RGB", (16, 10), colour).save(photo)
        label, probabilities = client.classify(photo)
        assert label == expected and max(probabilities) > 0.9 and sum(probabilities) == pytest.approx(1, abs=1e-5)
    # The manifest says NCHW for a file that takes NHWC: the client transposes as the file's shape says.
    client.state["installed"]["input"] = {**nhwc, "layout": "NCHW"}
    client._session = None
    assert client.classify(photo)[0] == "ants"
    # A manifest whose tensors are not the file's: refused at load, reported as load_failed.
    client.state["installed"]["tensors"] = {**tensors, "inputs": [{**tensors["inputs"][0], "shape": [1, 3, 8, 8]}]}
    client._session = None
    with pytest.raises(mc.IntegrityError):
        client.load()
    assert client.pending_events[-1]["event"] == "load_failed"
