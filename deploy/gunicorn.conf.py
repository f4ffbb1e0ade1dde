"""gunicorn settings for the web process (deploy/platform-web.service, Procfile `web`).

Every value can be overridden from the environment (GUNICORN_*). Sync workers: measured
here, gthread workers had erratic latency tails, and nginx buffers slow clients' uploads
and downloads, so a sync worker is busy only while Django works.
"""
import multiprocessing
import os

import gunicorn.http.wsgi

# gunicorn 27 has no setting for its banner: every response starts with "Server: gunicorn",
# taken from this module constant when the response is made. Name no software (a scanner
# learns nothing from it; nginx in front replaces it with its own, without a version).
gunicorn.http.wsgi.SERVER = "web"

# systemd socket activation (platform-web.socket) takes precedence over bind.
bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", multiprocessing.cpu_count() * 2 + 1))
worker_class = "sync"
# An upload (20 MB, decoded, EXIF stripped, hashed) takes well under this; a hung worker is
# killed and replaced instead of holding its slot forever.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", 30))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", 30))
keepalive = 5  # nginx keeps upstream connections open (deploy/nginx.conf)
# Recycle workers now and then, staggered, so slow growth of a process never adds up.
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", 2000))
max_requests_jitter = max_requests // 10
# nginx on the same machine sets X-Forwarded-Proto; Django trusts it (SECURE_PROXY_SSL_HEADER).
forwarded_allow_ips = os.environ.get("GUNICORN_FORWARDED_ALLOW_IPS", "127.0.0.1")

# No gunicorn access log: Django's ops.middleware logs each request once, with its request id,
# without query string or headers. gunicorn's own messages (boot, worker timeouts) go to stderr,
# as JSON lines when PLATFORM_LOG_FORMAT=json, like the rest of the platform.
# systemd manages the process (reload: HUP); no control socket in the home directory.
control_socket_disable = True
accesslog = None
errorlog = "-"
if os.environ.get("PLATFORM_LOG_FORMAT") == "json":
    logconfig_dict = {
        "root": {"level": "INFO", "handlers": ["error_console"]},
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": ["error_console"], "propagate": False},
            "gunicorn.access": {"level": "WARNING", "handlers": [], "propagate": False},
        },
        "handlers": {
            "error_console": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"},
        },
        "formatters": {"json": {"()": "ops.logs.JsonFormatter"}},
    }
