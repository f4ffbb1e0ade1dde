"""The process list (Procfile, deploy/*.service) agrees with the settings and the checkout."""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests
from django.conf import settings

from ops.selectors import queue_names

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
UNITS = sorted(DEPLOY.glob("*.service"))


def _procfile() -> dict[str, list[str]]:
    lines = [line for line in (ROOT / "Procfile").read_text().splitlines() if line and not line.startswith("#")]
    return {name: shlex.split(command) for name, command in (line.split(": ", 1) for line in lines)}


def _unit_exec(unit: Path) -> list[str]:
    return shlex.split(re.search(r"^ExecStart=(.+)$", unit.read_text(), re.M).group(1))


def _queues(argv: list[str]) -> set[str]:
    return set(argv[argv.index("--queues") + 1].split(",")) if "--queues" in argv else set()


def test_procfile_lists_the_four_processes():
    processes = _procfile()
    assert set(processes) == {"web", "worker-light", "worker-training", "beat"}
    assert "config.wsgi" in processes["web"] and "beat" in processes["beat"]


@pytest.mark.parametrize("commands", [
    pytest.param(lambda: list(_procfile().values()), id="Procfile"),
    pytest.param(lambda: [_unit_exec(unit) for unit in UNITS], id="systemd"),
])
def test_every_queue_has_a_worker_and_the_training_worker_runs_one_task(commands):
    workers = [argv for argv in commands() if "worker" in argv]
    consumed = set().union(*(_queues(argv) for argv in workers))
    assert set(queue_names()) <= consumed, "a queue the platform sends to has no worker"
    assert settings.CELERY_TASK_ROUTES["training.tasks.training_run_nightly"]["queue"] == "training"
    training = next(argv for argv in workers if _queues(argv) == {"training"})
    assert training[training.index("--concurrency") + 1] == "1"
    assert sum("beat" in argv for argv in commands()) == 1, "exactly one beat"


def test_every_command_exists_in_the_virtualenv():
    for unit in UNITS:
        program = Path(_unit_exec(unit)[0].replace("/srv/platform", str(ROOT)))
        assert program.parent == ROOT / ".venv" / "bin" and os.access(program, os.X_OK), unit.name
    for argv in _procfile().values():
        program = ROOT / argv[argv.index("env") + 2]  # env PYTHONPATH=... .venv/bin/<program>
        assert os.access(program, os.X_OK), argv


def test_units_share_one_environment_file_and_pin_training_to_its_own_cores():
    for unit in UNITS:
        text = unit.read_text()
        assert "EnvironmentFile=/etc/platform/platform.env" in text, unit.name
        assert "PLATFORM_LOG_FORMAT=json" in text, unit.name
    training = (DEPLOY / "platform-worker-training.service").read_text()
    cores = set(re.search(r"^CPUAffinity=(.+)$", training, re.M).group(1).split())
    for unit in UNITS:
        if unit.name != "platform-worker-training.service" and "CPUAffinity=" in unit.read_text():
            other = set(re.search(r"^CPUAffinity=(.+)$", unit.read_text(), re.M).group(1).split())
            assert not cores & other, unit.name


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed")
def test_systemd_accepts_the_units(tmp_path):
    env_file = tmp_path / "platform.env"
    env_file.write_text("")
    for unit in [*UNITS, *DEPLOY.glob("*.socket")]:
        text = unit.read_text().replace("/srv/platform", str(ROOT)).replace("/etc/platform/platform.env", str(env_file))
        (tmp_path / unit.name).write_text(re.sub(r"^(User|Group)=platform$", r"\1=root", text, flags=re.M))
    result = subprocess.run(["systemd-analyze", "verify", *sorted(str(p) for p in tmp_path.glob("platform-*"))],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_nginx_takes_an_upload_of_the_largest_allowed_photo():
    conf = (DEPLOY / "nginx.conf").read_text()
    size = re.search(r"client_max_body_size (\d+)m;", conf).group(1)
    limit = int(size) * 1024 * 1024
    assert settings.PLATFORM_UPLOAD_MAX_BYTES < limit <= settings.PLATFORM_UPLOAD_MAX_BYTES * 1.1
    assert "proxy_set_header X-Forwarded-Proto $scheme;" in conf
    assert "proxy_set_header X-Request-ID $request_id;" in conf


@pytest.mark.skipif(not (shutil.which("nginx") and shutil.which("openssl")), reason="needs nginx and openssl")
def test_nginx_accepts_the_site(tmp_path):
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=test",
                    "-keyout", str(tmp_path / "key.pem"), "-out", str(tmp_path / "cert.pem")],
                   check=True, capture_output=True, timeout=60)
    site = ((DEPLOY / "nginx.conf").read_text()
            .replace("/etc/letsencrypt/live/platform.example.org/fullchain.pem", str(tmp_path / "cert.pem"))
            .replace("/etc/letsencrypt/live/platform.example.org/privkey.pem", str(tmp_path / "key.pem"))
            .replace("/var/log/nginx/", f"{tmp_path}/"))
    (tmp_path / "site.conf").write_text(site)
    (tmp_path / "nginx.conf").write_text(
        f"error_log {tmp_path}/error.log;\npid {tmp_path}/nginx.pid;\nevents {{}}\nhttp {{ include {tmp_path}/site.conf; }}\n")
    result = subprocess.run(["nginx", "-t", "-c", str(tmp_path / "nginx.conf"), "-p", str(tmp_path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
def test_gunicorn_serves_with_json_logs(tmp_path):
    """The web process as the unit starts it: its config, the app, one JSON line per event."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": f"platform{os.pathsep}.", "PLATFORM_LOG_FORMAT": "json",
           "DJANGO_SETTINGS_MODULE": "config.settings",
           "DJANGO_SECRET_KEY": "deploy-test", "PLATFORM_ENV_FILE": "", "PLATFORM_VAR_DIR": str(tmp_path / "var"),
           "GUNICORN_BIND": f"127.0.0.1:{port}", "GUNICORN_WORKERS": "1"}
    env.pop("DATABASE_URL", None)  # the embedded default: SQLite under PLATFORM_VAR_DIR
    env.pop("CELERY_BROKER_URL", None)
    log = tmp_path / "gunicorn.log"
    with open(log, "w") as out:
        web = subprocess.Popen([str(ROOT / ".venv" / "bin" / "gunicorn"), "config.wsgi", "--config",
                                "deploy/gunicorn.conf.py"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                answer = requests.get(f"http://127.0.0.1:{port}/readyz", timeout=60,
                                      headers={"X-Request-ID": "deploy-test-0001"})
                break
            except requests.ConnectionError:
                assert web.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.2)
    finally:
        web.terminate()
        web.wait(timeout=30)
    assert answer.status_code == 200, answer.text
    # The banner names no server software (gunicorn's default is "Server: gunicorn").
    assert answer.headers["Server"] == "web" and "gunicorn" not in str(answer.headers).lower()
    assert "script-src 'self'" in answer.headers["Content-Security-Policy"]
    lines = [json.loads(line) for line in log.read_text().splitlines()]  # every line is JSON
    assert any(line["logger"] == "gunicorn.error" and "Booting worker" in line["message"] for line in lines)
    access = [line for line in lines if line["logger"] == "ops.access"]
    assert [(line["path"], line["request_id"]) for line in access] == [("/readyz", "deploy-test-0001")]
