"""A web-only install works: requirements/web.txt (no torch, no exporters) into a fresh venv
runs Django's checks, migrates and answers requests of the web process.

The web process and the light worker are deployed on machines without the training stack
(README, "Install"); this proves that lock is complete and that nothing on the web side needs torch.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WEB_LOCK = ROOT / "requirements" / "web.txt"
# The training stack: none of it may be importable in the web-only venv.
TRAINING_ONLY = ("torch", "torchvision", "torchao", "torch_pruning", "executorch", "onnx", "onnxscript",
                 "coremltools", "litert_torch", "ai_edge_litert", "sklearn", "matplotlib")

# Runs inside the web-only venv: Django's checks, migrations, then requests through the whole
# middleware stack and URLconf (Django's test client), and which of the names in argv it can import.
_PROBE = """
import importlib.util, json, sys
import django
django.setup()
from django.core.management import call_command
call_command("check", fail_level="WARNING")
call_command("migrate", verbosity=0, interactive=False)
from django.test import Client
client = Client()
answers = {}
for url in ("/healthz", "/api/schema/", "/api/mobile/v1/models/demo/update"):
    response = client.get(url)
    answers[url] = {"status": response.status_code, "type": response.get("Content-Type", ""),
                    "body": response.content[:2000].decode("utf-8", "replace")}
print(json.dumps({
    "answers": answers,
    "importable": [name for name in sys.argv[1:] if importlib.util.find_spec(name) is not None],
    "torch_loaded": "torch" in sys.modules,
}))
"""


def _run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(args, capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{args[:3]} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.mark.slow
def test_the_web_lock_installs_and_serves_without_torch(tmp_path):
    venv = tmp_path / "web-venv"
    started = time.monotonic()
    # A bare venv filled by our own pip (--python), which saves ensurepip. pip's configuration on the
    # machine (local wheels, cache) applies and the lock's hashes are checked. A lock lists every
    # package, so pip resolves nothing (--no-deps) and `pip check` proves nothing is missing;
    # no bytecode compilation (the web venv is thrown away).
    pip = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python")]
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    _run([*pip, "install", "--quiet", "--require-hashes", "--no-deps", "--no-compile", "-r", str(WEB_LOCK)],
         timeout=600)
    _run([*pip, "check"])
    installed_in = time.monotonic() - started

    # The embedded default under tmp_path, whatever the caller's environment says (scripts/test's servers).
    ours = ("DATABASE_URL", "CACHE_URL", "CELERY_BROKER_URL", "STORAGE_BACKEND", "EMAIL_URL")
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("DJANGO_", "PLATFORM_", "AWS_")) and key not in ours}
    env.update({
        # As manage.py and pytest set it: the repository root and the source root.
        "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'platform'}",
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DJANGO_SECRET_KEY": "web-install-test-" + "x" * 40,
        "PLATFORM_VAR_DIR": str(tmp_path / "var"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'web.sqlite3'}",
        "CACHE_URL": "locmemcache://",
        "CELERY_BROKER_URL": "memory://",
        "STORAGE_BACKEND": "local",
    })
    result = _run([str(venv / "bin" / "python"), "-c", _PROBE, *TRAINING_ONLY], cwd=tmp_path, env=env, timeout=300)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(f"web-only venv: installed in {installed_in:.1f} s, probed in {time.monotonic() - started - installed_in:.1f} s "
          f"(wall); CPU of all steps {children.ru_utime + children.ru_stime:.1f} s")

    assert report["importable"] == [], f"the web lock pulls training packages: {report['importable']}"
    assert report["torch_loaded"] is False
    answers = report["answers"]
    assert answers["/healthz"]["status"] == 200
    # The schema view imports every API module of every app: the whole web side loads without torch.
    schema = answers["/api/schema/"]
    assert schema["status"] == 200 and "openapi" in schema["body"]
    # An app without its key gets the JSON error body, not a 500.
    update = answers["/api/mobile/v1/models/demo/update"]
    assert update["status"] in (401, 403)
    assert json.loads(update["body"])["error"]["code"]
