"""Settings for benchmarks only: the production settings plus bench/bench_urls.py.

``DJANGO_SETTINGS_MODULE=bench.bench_settings`` (with the repo root and platform/ on the path).
Everything else (middleware, caches, the distribution settings) is production's, so a
baseline view measured here pays exactly what every real request pays around its view.
"""
from config.settings import *  # noqa: F403

ROOT_URLCONF = "bench.bench_urls"
