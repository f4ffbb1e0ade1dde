#!/usr/bin/env python
"""Django's command-line utility for administrative tasks.

`platform/` is a source root, not a package (a package named `platform` would shadow
the standard library module that torch, botocore and celery import), so it goes on
sys.path here, after the repository root.
"""
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent


def main() -> None:
    """Run a management command with the project's import paths set."""
    for path in (ROOT / "platform", ROOT):
        if str(path) not in sys.path:
            sys.path.insert(1, str(path))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
