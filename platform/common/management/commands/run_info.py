"""`manage.py run_info`: where scripts/run serves, and the banner it prints.

One origin for everything a newcomer touches: PLATFORM_BASE_URL (environment, then .env,
then the default http://127.0.0.1:8000) is the URL the manifests' download links start with,
so gunicorn binds to its host and port and the printed commands use it verbatim. An app
client sends its key only to the origin it was given; a banner saying 127.0.0.1 while the
manifests say localhost is another origin, and the download is refused (401).
"""
import shlex
import urllib.parse

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1"}
DEFAULT_PORT = 8000


def run_origin(base_url: str) -> tuple[str, str]:
    """(base URL without a trailing slash, gunicorn bind address) for scripts/run.

    A loopback base URL is served where it points (``localhost`` binds 127.0.0.1, what it
    resolves to first). Any other host is a public URL in front of a proxy, which forwards
    to 127.0.0.1:8000.
    """
    parts = urllib.parse.urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CommandError(f"PLATFORM_BASE_URL={base_url!r} is not an http(s) URL.")
    try:
        port = parts.port
    except ValueError as exc:
        raise CommandError(f"PLATFORM_BASE_URL={base_url!r}: {exc}") from None
    host = parts.hostname
    if host in LOOPBACK_NAMES:
        port = port or {"http": 80, "https": 443}[parts.scheme]
    else:
        port = DEFAULT_PORT
    if host == "localhost" or host not in LOOPBACK_NAMES:
        host = "127.0.0.1"
    bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return base_url.rstrip("/"), bind


class Command(BaseCommand):
    help = "Print scripts/run's bind address (--bind) or its banner of URLs and the app client's command."

    def add_arguments(self, parser):
        parser.add_argument("--bind", action="store_true", help="print only gunicorn's bind address")

    def handle(self, *args, bind=False, **options):
        base_url, address = run_origin(settings.PLATFORM_BASE_URL)
        if bind:
            self.stdout.write(address)
            return
        key_file = settings.VAR_DIR / "demo-app-key.txt"
        try:
            key_file = key_file.relative_to(settings.ROOT_DIR)
        except ValueError:
            pass  # a var folder outside the checkout: its absolute path
        key = f'"$(cat {shlex.quote(str(key_file))})"'
        self.stdout.write(
            "\n"
            "  Platform running (Ctrl-C stops it):\n"
            f"    volunteer page   {base_url}/\n"
            f"    admin            {base_url}/admin/   (staff login printed above)\n"
            f"    API docs         {base_url}/api/docs/\n"
            f"    model manifest   {base_url}/api/mobile/v1/models/ants-bees/latest\n"
            "    an app's poll    (from this folder; PHOTO.jpg: any photo)\n"
            f"      .venv/bin/python mobile_api/client.py --base-url {base_url} --key {key} "
            "--model ants-bees PHOTO.jpg\n"
        )
