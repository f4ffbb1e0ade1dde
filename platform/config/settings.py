"""The one settings module, driven by environment variables (django-environ).

Every variable is listed with a safe default in `.env.example`. Without any variable set
the platform runs on the embedded default: SQLite, local files under `var/`, and a Celery
broker on the local file system, so no server is needed. Production sets DATABASE_URL
(PostgreSQL), CELERY_BROKER_URL (Redis) and STORAGE_BACKEND=s3.

Importing it has no side effects: the folders the embedded default needs are created when a
process starts Django (common/apps.py). The tests run on config/settings_test.py.
"""
from datetime import timedelta
from pathlib import Path

import environ
from celery.schedules import crontab
from django.core.exceptions import ImproperlyConfigured

ROOT_DIR = Path(__file__).resolve().parents[2]
env = environ.Env()
# PLATFORM_ENV_FILE="" reads no file (the systemd units, the tests and the processes they start).
_env_file = env.str("PLATFORM_ENV_FILE", default=str(ROOT_DIR / ".env"))
if _env_file and Path(_env_file).is_file():
    environ.Env.read_env(_env_file)

VAR_DIR = (ROOT_DIR / env.str("PLATFORM_VAR_DIR", default="var")).resolve()

DEBUG = env.bool("DJANGO_DEBUG", default=False)
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("Set DJANGO_SECRET_KEY (see .env.example).")
    SECRET_KEY = "insecure-development-key-never-use-in-production"
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "axes",  # failed-login lockout (security section)
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "common",
    "accounts",
    "challenges",
    "submissions",
    "leaderboards",
    "newsletter",
    "verification",
    "training",
    "mobile_api",
    "ops",
]

MIDDLEWARE = [
    # First: every request, static files included, gets an id and an access log line.
    "ops.middleware.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Content-Security-Policy on every answer, no-store on private API answers.
    "common.middleware.SecurityHeadersMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Near the end, as django-axes asks: turns a lockout into the 429 page.
    "axes.middleware.AxesMiddleware",
    # Last, so its process_exception sees a view's database errors first: 503, not a 500 page.
    "common.middleware.DatabaseUnavailableMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [ROOT_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- database -------------------------------------------------------------------------
DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'platform.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # (A fresh checkout has no var/ yet; SQLite cannot create the folder: common/apps.py does.)
    # The embedded default has a web server, a worker and beat writing one file: WAL lets
    # readers run beside a writer, IMMEDIATE takes the write lock up front so concurrent
    # transactions wait (timeout) instead of failing with "database is locked".
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
    }
else:
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
    # A persistent connection that died (a database restart) is replaced at the next request.
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    # An unreachable server fails a request in seconds (503) instead of the OS's TCP timeout.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault(
        "connect_timeout", env.int("DATABASE_CONNECT_TIMEOUT", default=5)
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# django-axes first: it refuses a locked-out username+address before any password is checked.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "home"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("PLATFORM_TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

# --- files ----------------------------------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STORAGE_BACKEND = env.str("STORAGE_BACKEND", default="local")
if STORAGE_BACKEND == "s3":
    from botocore.config import Config as _BotoConfig

    _default_storage = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": env.str("AWS_STORAGE_BUCKET_NAME"),
            "endpoint_url": env.str("AWS_S3_ENDPOINT_URL", default=None),
            "access_key": env.str("AWS_ACCESS_KEY_ID"),
            "secret_key": env.str("AWS_SECRET_ACCESS_KEY"),
            "region_name": env.str("AWS_S3_REGION_NAME", default="us-east-1"),
            "default_acl": None,  # the bucket stays private; reads go through presigned URLs
            "querystring_auth": True,
            "querystring_expire": env.int("AWS_QUERYSTRING_EXPIRE", default=900),
            "file_overwrite": False,
            # A key prefix, so several deployments (or test runs) can share a bucket.
            "location": env.str("AWS_S3_LOCATION", default=""),
            # The client's own settings (django-storages' signature_version and addressing_style
            # options are ignored beside it). Short timeouts and few retries: a stopped object
            # store is answered in seconds (503 + Retry-After), not after botocore's 60 s
            # timeouts and up to 5 attempts.
            "client_config": _BotoConfig(
                signature_version="s3v4",
                # Path-style works with every S3 implementation (radosgw, MinIO, AWS).
                s3={"addressing_style": env.str("AWS_S3_ADDRESSING_STYLE", default="path")},
                connect_timeout=env.float("AWS_S3_CONNECT_TIMEOUT", default=3.0),
                read_timeout=env.float("AWS_S3_READ_TIMEOUT", default=30.0),
                # Attempts in all, the first included (the AWS SDKs' AWS_MAX_ATTEMPTS meaning).
                retries={"mode": "standard", "total_max_attempts": env.int("AWS_S3_MAX_ATTEMPTS", default=3)},
            ),
        },
    }
elif STORAGE_BACKEND == "local":
    _default_storage = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        # base_url is unused on purpose: media is never served as a public folder, every
        # read goes through a view that checks who is asking.
        "OPTIONS": {"location": str(VAR_DIR / "media")},
    }
else:
    raise ImproperlyConfigured(f"STORAGE_BACKEND must be 'local' or 's3', not {STORAGE_BACKEND!r}")
# Lifetime of the signed photo URLs the API hands out (the same as presigned S3 URLs).
PLATFORM_PHOTO_URL_MAX_AGE = env.int("AWS_QUERYSTRING_EXPIRE", default=900)
STORAGES = {
    "default": _default_storage,
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}

# An object no row references is deleted by the daily sweep once older than this: an upload
# in flight stores its objects before its row commits (common/storage_sweep.py).
PLATFORM_ORPHAN_GRACE_SECONDS = env.int("PLATFORM_ORPHAN_GRACE_SECONDS", default=3600)

# --- uploads --------------------------------------------------------------------------
PLATFORM_UPLOAD_MAX_BYTES = env.int("PLATFORM_UPLOAD_MAX_BYTES", default=20 * 1024 * 1024)
PLATFORM_UPLOAD_MAX_PIXELS = env.int("PLATFORM_UPLOAD_MAX_PIXELS", default=50_000_000)
# Uploads above this stay on disk while Django parses them instead of in memory.
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
# A new photo within this Hamming distance (of 64 phash bits) of an earlier photo of the
# project is accepted but flagged as a near duplicate (earns no points).
PLATFORM_NEAR_DUPLICATE_DISTANCE = env.int("PLATFORM_NEAR_DUPLICATE_DISTANCE", default=6)
# Burst limit per volunteer on the upload API (DRF throttle syntax: N/sec|min|hour|day).
PLATFORM_UPLOAD_RATE = env.str("PLATFORM_UPLOAD_RATE", default="30/min")
# Photos per volunteer, project and project day (the project's time zone).
PLATFORM_UPLOAD_DAILY_QUOTA = env.int("PLATFORM_UPLOAD_DAILY_QUOTA", default=200)

# --- moderation -----------------------------------------------------------------------
# More uploads than this from one volunteer within an hour flags the newest as suspicious.
PLATFORM_SUSPICIOUS_UPLOADS_PER_HOUR = env.int("PLATFORM_SUSPICIOUS_UPLOADS_PER_HOUR", default=60)
# The published model's probability for the claimed label below this flags "model disagrees".
PLATFORM_MODEL_DISAGREEMENT_THRESHOLD = env.float("PLATFORM_MODEL_DISAGREEMENT_THRESHOLD", default=0.2)
# Below this top probability the volunteer is told "the model is unsure: exactly the photo it needs".
PLATFORM_MODEL_UNSURE_BELOW = env.float("PLATFORM_MODEL_UNSURE_BELOW", default=0.7)
# A generated challenge picks a label whose holdout recall is below this target.
PLATFORM_CHALLENGE_RECALL_TARGET = env.float("PLATFORM_CHALLENGE_RECALL_TARGET", default=0.9)

# --- verification by volunteers (README "Verification by volunteers": why these defaults) ---
# A photo is decided once the weighted yes+no votes reach this total and one side holds the
# majority share; a voter's weight is the log-odds of their accuracy on gold (0.85 -> 1.7).
PLATFORM_VERIFY_MIN_WEIGHT = env.float("PLATFORM_VERIFY_MIN_WEIGHT", default=6.0)
PLATFORM_VERIFY_MAJORITY = env.float("PLATFORM_VERIFY_MAJORITY", default=0.8)
# Share of each volunteer's tasks that are gold (staff-approved photos), mixed in unannounced.
PLATFORM_VERIFY_GOLD_SHARE = env.float("PLATFORM_VERIFY_GOLD_SHARE", default=0.2)
# Voters whose accuracy on gold is, with 95% confidence, below this stop counting.
PLATFORM_VERIFY_MIN_ACCURACY = env.float("PLATFORM_VERIFY_MIN_ACCURACY", default=0.7)
# The current model votes too, with at most this weight (kept below the minimum weight).
PLATFORM_VERIFY_MODEL_MAX_WEIGHT = env.float("PLATFORM_VERIFY_MODEL_MAX_WEIGHT", default=2.0)
# After this many human votes without a decision, a photo is left to staff.
PLATFORM_VERIFY_MAX_VOTES = env.int("PLATFORM_VERIFY_MAX_VOTES", default=12)
# Votes per volunteer (DRF throttle syntax), and the whole points a vote that agreed earns.
PLATFORM_VERIFY_RATE = env.str("PLATFORM_VERIFY_RATE", default="20/min")
PLATFORM_VERIFY_POINTS = env.int("PLATFORM_VERIFY_POINTS", default=2)
# Bonus for an approved upload the current model got wrong (its probability below one half).
PLATFORM_MODEL_MISS_BONUS = env.int("PLATFORM_MODEL_MISS_BONUS", default=5)
# Uploads from volunteers whose gold accuracy is, with 95% confidence, above this skip
# verification (approved at once). Off by default.
PLATFORM_VERIFY_TRUSTED_UPLOADS = env.bool("PLATFORM_VERIFY_TRUSTED_UPLOADS", default=False)
PLATFORM_VERIFY_TRUSTED_ACCURACY = env.float("PLATFORM_VERIFY_TRUSTED_ACCURACY", default=0.95)

# --- email (newsletter) ---------------------------------------------------------------
# Absolute links in emails (unsubscribe, photos) and manifests' downloads start with this;
# scripts/run binds to it and prints it (common/management/commands/run_info.py).
PLATFORM_BASE_URL = env.str("PLATFORM_BASE_URL", default="http://127.0.0.1:8000")
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="Volunteer vision <newsletter@localhost>")
# EMAIL_URL (django-environ): smtp+tls://user:password@host:587, consolemail://, ...
# Unset, the embedded default writes each email as a file under PLATFORM_VAR_DIR/mail.
if env.str("EMAIL_URL", default=""):
    vars().update(env.email_url("EMAIL_URL"))
else:
    EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
    EMAIL_FILE_PATH = str(VAR_DIR / "mail")

# --- cache ----------------------------------------------------------------------------
# Holds the throttles' counters, app keys and the update check's channel documents: every
# process (web workers, Celery workers, commands) must share it, or a publish or rollback
# made by one never reaches the others. Production: CACHE_URL=redis://... The embedded
# default: a folder on disk (README, "Configuration": measured against local memory). The
# tests keep local memory (config/settings_test.py) unless CACHE_URL says otherwise.
CACHES = {"default": env.cache("CACHE_URL", default=f"filecache://{VAR_DIR / 'cache'}")}

# --- REST API -------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "common.schema.AutoSchema",
    "EXCEPTION_HANDLER": "common.errors.api_exception_handler",
    # DRF's defaults, with a JSON parser that refuses deeply nested bodies (400, not a 500).
    "DEFAULT_PARSER_CLASSES": [
        "common.parsers.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Volunteer vision platform API",
    "DESCRIPTION": "Daily photo challenges, moderation, nightly training and model updates for apps.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # Bodies are documented as JSON (forms are accepted too, but a form cannot say "false" or
    # carry a list); the upload endpoints declare their multipart bodies themselves.
    "PARSER_WHITELIST": ["rest_framework.parsers.JSONParser"],
    # What Django's <slug:...> converter matches (a path that does not match is no operation).
    "PATH_CONVERTER_OVERRIDES": {"slug": {"type": "string", "pattern": "^[-a-zA-Z0-9_]+$"}},
    # The error body and enforced bounds (common/schema.py), then the app endpoints' key and the
    # update check, a plain Django view (mobile_api/schema.py).
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "common.schema.postprocess",
        "mobile_api.schema.postprocess",
    ],
}

# --- security -------------------------------------------------------------------------
# Production serves HTTPS through nginx, which sets X-Forwarded-Proto: PLATFORM_HTTPS=1 turns
# on everything that needs HTTPS (`manage.py check --deploy` passes with it). Off by default:
# the embedded default (scripts/run) is plain http on localhost, where secure cookies and
# HSTS would lock the browser out.
PLATFORM_HTTPS = env.bool("PLATFORM_HTTPS", default=False)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if PLATFORM_HTTPS else None
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=PLATFORM_HTTPS)
# Load balancers probe over plain http inside the network: no redirect for the probes.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = PLATFORM_HTTPS
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = CSRF_COOKIE_SAMESITE = "Lax"
SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=31_536_000 if PLATFORM_HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", default=PLATFORM_HTTPS)
# Preloading is a promise to browsers that is slow to take back: a deployment opts in on
# purpose, and until then the deploy check's reminder about it (security.W021) stays quiet.
SECURE_HSTS_PRELOAD = env.bool("DJANGO_SECURE_HSTS_PRELOAD", default=False)
SILENCED_SYSTEM_CHECKS = [] if SECURE_HSTS_PRELOAD else ["security.W021"]
SECURE_CONTENT_TYPE_NOSNIFF = True
# A CSRF refusal under /api/ answers in the API's JSON error shape (pages keep Django's page).
CSRF_FAILURE_VIEW = "common.error_views.csrf_failure"
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Reverse proxies in front of the platform that append the client's address to
# X-Forwarded-For (nginx: 1). 0 trusts only the socket's address: a client cannot pick its
# own address to dodge the per-address limits below.
PLATFORM_PROXY_COUNT = env.int("PLATFORM_PROXY_COUNT", default=0)
REST_FRAMEWORK["NUM_PROXIES"] = PLATFORM_PROXY_COUNT
# Per-address limits on the account endpoints (DRF throttle syntax), shared by the API and
# the pages: token API and login page; sign-up API and page.
PLATFORM_LOGIN_RATE = env.str("PLATFORM_LOGIN_RATE", default="30/min")
PLATFORM_SIGNUP_RATE = env.str("PLATFORM_SIGNUP_RATE", default="20/hour")
# A school or office shares one address: each account signed up from it in the last
# PLATFORM_SIGNUP_ACTIVE_DAYS that has since sent a photo (not rejected) adds
# PLATFORM_SIGNUP_BONUS_PER_ACTIVE to that address's budget per period, up to _BONUS_MAX.
PLATFORM_SIGNUP_BONUS_PER_ACTIVE = env.int("PLATFORM_SIGNUP_BONUS_PER_ACTIVE", default=2)
PLATFORM_SIGNUP_BONUS_MAX = env.int("PLATFORM_SIGNUP_BONUS_MAX", default=200)
PLATFORM_SIGNUP_ACTIVE_DAYS = env.int("PLATFORM_SIGNUP_ACTIVE_DAYS", default=30)
# Failed logins (page, admin, token API) lock out one username from one address.
AXES_FAILURE_LIMIT = env.int("PLATFORM_LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("PLATFORM_LOGIN_COOLOFF_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_DISABLE_ACCESS_LOG = True  # successful logins: last_login is enough (no row per login)
AXES_VERBOSE = False  # no banner on every process start
AXES_CLIENT_IP_CALLABLE = "accounts.throttles.client_address"
AXES_LOCKOUT_CALLABLE = "accounts.throttles.lockout_page"

# --- Celery ---------------------------------------------------------------------------
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    # kombu's filesystem transport expects its folders to exist (created by common/apps.py).
    _broker_dir = VAR_DIR / "broker"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        # Exchange tables; kombu's default is a "control" folder in the working directory.
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
        # How long an idle worker sleeps between looks at the folder. kombu's 1 s default also
        # paused after every task (prefetch 1 leaves nothing to take while one runs): one task
        # a second. bench/embedded_broker.py measured the default below.
        "polling_interval": env.float("PLATFORM_BROKER_POLL_SECONDS", default=0.05),
    }
# Two queues, so a night of training never delays the light work behind it: "light"
# (upload follow-ups, email, the nightly fan-out) and "training" (one task per project and
# night, for a worker with cores of its own). deploy/ starts one worker per queue.
CELERY_TASK_DEFAULT_QUEUE = "light"
CELERY_TASK_ROUTES = {
    "training.tasks.training_run_nightly": {"queue": "training"},
    # A version's patches and channel moves (after its publish): light work, apps wait for it.
    "mobile_api.tasks.version_distribute": {"queue": "light"},
}
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True  # a killed worker's task is redelivered; the run claim makes that safe
# Messages a worker process reserves beyond the one it runs. 1 on Redis (a long task never
# holds others hostage). The filesystem broker deletes a message's file when it hands it out,
# so reserving more loses nothing more if a worker dies (the database re-queues follow-ups),
# and the worker takes the next message without waiting for a poll.
CELERY_WORKER_PREFETCH_MULTIPLIER = env.int(
    "PLATFORM_BROKER_PREFETCH", default=8 if CELERY_BROKER_URL.startswith("filesystem://") else 1
)
CELERY_TIMEZONE = TIME_ZONE
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
# The database is the source of truth, the broker only a doorbell: an upload never waits
# on a broker that is down or hung for more than about two of these (connect, then one
# retry), and what could not be enqueued is re-queued from the database (photo_followups_resume).
PLATFORM_BROKER_TIMEOUT_SECONDS = env.float("PLATFORM_BROKER_TIMEOUT_SECONDS", default=1.0)
CELERY_BROKER_CONNECTION_TIMEOUT = PLATFORM_BROKER_TIMEOUT_SECONDS
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    # One retry reconnects a pooled connection that died with a broker restart.
    "max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2,
}
# Redis hands an unacknowledged task (its worker was killed: acks_late) to a worker again
# after this long. A training run that outlives it gets a second delivery, which the run
# claim turns away; the dead run must be failed by then (PLATFORM_RUN_STALE_SECONDS below).
PLATFORM_BROKER_VISIBILITY_TIMEOUT_SECONDS = env.int("PLATFORM_BROKER_VISIBILITY_TIMEOUT_SECONDS", default=3600)
if CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        # Without these a publish waits forever on a broker that stopped answering.
        "socket_connect_timeout": PLATFORM_BROKER_TIMEOUT_SECONDS,
        "socket_timeout": PLATFORM_BROKER_TIMEOUT_SECONDS,
        "visibility_timeout": PLATFORM_BROKER_VISIBILITY_TIMEOUT_SECONDS,
    }
# When beat starts the nightly training: a 5-field crontab (minute hour day month weekday),
# in PLATFORM_TIME_ZONE.
PLATFORM_NIGHTLY_CRON = env.str("PLATFORM_NIGHTLY_CRON", default="0 2 * * *")
# The daily orphan sweep (common/storage_sweep.py), after the night's training.
PLATFORM_STORAGE_SWEEP_CRON = env.str("PLATFORM_STORAGE_SWEEP_CRON", default="30 5 * * *")
# An upload's follow-ups (model scoring) still pending after this long are re-queued from
# the database: they were lost with the broker, or are stuck behind a dead worker.
PLATFORM_FOLLOWUPS_RESUME_AFTER_SECONDS = env.int("PLATFORM_FOLLOWUPS_RESUME_AFTER_SECONDS", default=120)
# How often beat looks for them.
PLATFORM_FOLLOWUPS_RESUME_EVERY_SECONDS = env.int("PLATFORM_FOLLOWUPS_RESUME_EVERY_SECONDS", default=60)
# The operations page colours a queue with this many waiting tasks as a warning / critical
# (and by the age of the oldest waiting follow-up: ops.selectors.backlog_level).
PLATFORM_OPS_QUEUE_WARNING = env.int("PLATFORM_OPS_QUEUE_WARNING", default=100)
PLATFORM_OPS_QUEUE_CRITICAL = env.int("PLATFORM_OPS_QUEUE_CRITICAL", default=1000)
CELERY_BEAT_SCHEDULE = {
    "nightly-training": {
        "task": "training.tasks.nightly_training_enqueue",
        "schedule": crontab.from_string(PLATFORM_NIGHTLY_CRON),
    },
    "photo-followups-resume": {
        "task": "training.tasks.photo_followups_resume",
        "schedule": float(PLATFORM_FOLLOWUPS_RESUME_EVERY_SECONDS),
        # Ticks sent while no light worker runs are dropped, not piled up.
        "options": {"expires": float(PLATFORM_FOLLOWUPS_RESUME_EVERY_SECONDS)},
    },
    # Monday morning: the digest of the week that just ended (idempotent per issue and volunteer).
    "newsletter-weekly": {
        "task": "newsletter.tasks.newsletter_weekly",
        "schedule": crontab(day_of_week="mon", hour=8, minute=0),
    },
    # Daily, after the night's training: stored objects that no row owns (common/storage_sweep.py).
    "storage-sweep": {
        "task": "common.tasks.storage_sweep_daily",
        "schedule": crontab.from_string(PLATFORM_STORAGE_SWEEP_CRON),
    },
}

# --- training -------------------------------------------------------------------------
# A local torchvision-layout MobileNetV2 state dict for air-gapped machines; empty means
# torchvision downloads the ImageNet weights (networked machines).
PLATFORM_WEIGHTS_PATH = env.str("PLATFORM_WEIGHTS_PATH", default="") or None
PLATFORM_TORCH_THREADS = env.int("PLATFORM_TORCH_THREADS", default=0)  # 0: all cores
PLATFORM_HOLDOUT_PERCENT = env.int("PLATFORM_HOLDOUT_PERCENT", default=20)
PLATFORM_MIN_PHOTOS_PER_LABEL = env.int("PLATFORM_MIN_PHOTOS_PER_LABEL", default=5)
# A running training run whose last heartbeat (sent with every progress report) is older
# than this belongs to a dead worker and is failed at the next claim. It must be longer
# than the slowest step between two reports, and shorter than the broker's visibility
# timeout, so that a redelivered nightly task finds the dead run failed and trains again.
# (A run claimed on this host by a process that no longer exists is failed at once.)
PLATFORM_RUN_STALE_SECONDS = env.int("PLATFORM_RUN_STALE_SECONDS", default=600)
if CELERY_BROKER_URL.startswith(("redis://", "rediss://")) and (
    PLATFORM_RUN_STALE_SECONDS >= PLATFORM_BROKER_VISIBILITY_TIMEOUT_SECONDS
):
    raise ImproperlyConfigured(
        "PLATFORM_RUN_STALE_SECONDS must be below PLATFORM_BROKER_VISIBILITY_TIMEOUT_SECONDS: "
        "a redelivered nightly task would find its dead run still claimed."
    )
# Champion/challenger gate: a new model is published only if, on the same holdout photos,
# its accuracy is at most this much below the current release's...
PLATFORM_GATE_TOLERANCE_OVERALL = env.float("PLATFORM_GATE_TOLERANCE_OVERALL", default=0.01)
# ...and no label's recall is more than this much below the release's.
PLATFORM_GATE_TOLERANCE_PER_LABEL = env.float("PLATFORM_GATE_TOLERANCE_PER_LABEL", default=0.05)
# The size x similarity rule (training/ml/strategies.py): a data set is "large" when its
# smallest label has this many training photos (the ~200 per class of a robust model), and
# "similar to ImageNet" when the measured score (top-layer minus lower-layer separability,
# training/ml/similarity.py) is at least this. Admins can override per project (TrainingPolicy).
PLATFORM_STRATEGY_LARGE_PER_LABEL = env.int("PLATFORM_STRATEGY_LARGE_PER_LABEL", default=200)
PLATFORM_STRATEGY_SIMILARITY_MIN_SCORE = env.float("PLATFORM_STRATEGY_SIMILARITY_MIN_SCORE", default=0.0)
# Measured selection (training/ml/selection.py): the rule above is the prior; the candidates are
# cross-validated on the train split and one replaces the rule's choice only when it wins beyond
# the noise. Fine-tuning the top blocks is a candidate when every label has this many training
# photos; the expensive candidates run cheapest first within this nightly budget (minutes).
PLATFORM_STRATEGY_FINE_TUNE_MIN_PER_LABEL = env.int("PLATFORM_STRATEGY_FINE_TUNE_MIN_PER_LABEL", default=30)
PLATFORM_STRATEGY_CV_FOLDS = env.int("PLATFORM_STRATEGY_CV_FOLDS", default=5)
# The fine-tune candidate caches its frozen part's activations in memory (float16, every photo
# x 5 views, 49 KB per view at 224 px); above this many MB it is skipped, and the record says so.
PLATFORM_STRATEGY_FINE_TUNE_CACHE_MB = env.int("PLATFORM_STRATEGY_FINE_TUNE_CACHE_MB", default=4096)
PLATFORM_TRAINING_BUDGET_MINUTES = env.float("PLATFORM_TRAINING_BUDGET_MINUTES", default=60.0)
# Compression (training/ml/compress.py): after the gate, the float model is turned into these
# variants, in these formats (onnx: onnxruntime, pte: ExecuTorch with XNNPACK); every file is
# measured on the holdout and apps are offered those within the policy. Admins can narrow the
# variants and the allowed loss per project (TrainingPolicy).
from training.ml.config import COMPRESSION_FORMATS, COMPRESSION_VARIANTS  # noqa: E402 (pure Python, no torch)

PLATFORM_COMPRESSION_VARIANTS = env.list("PLATFORM_COMPRESSION_VARIANTS", default=list(COMPRESSION_VARIANTS))
PLATFORM_COMPRESSION_FORMATS = env.list("PLATFORM_COMPRESSION_FORMATS", default=list(COMPRESSION_FORMATS))
# A compressed file is offered only if its holdout accuracy is at most this many points (of
# 100) below the float model's.
PLATFORM_MAX_ACCURACY_LOSS_POINTS = env.float("PLATFORM_MAX_ACCURACY_LOSS_POINTS", default=1.0)
# Pruned variants keep this share of the float model's multiply-adds.
PLATFORM_PRUNE_MACS_RATIO = env.float("PLATFORM_PRUNE_MACS_RATIO", default=0.6)
# Below this many training photos no distilled student is built (it would learn the photos).
PLATFORM_DISTILL_MIN_TRAIN_PHOTOS = env.int("PLATFORM_DISTILL_MIN_TRAIN_PHOTOS", default=1000)
# Threads of every latency figure in the model card (phones run models on 1-4 big cores).
PLATFORM_LATENCY_THREADS = env.int("PLATFORM_LATENCY_THREADS", default=1)

# --- distribution (mobile_api) --------------------------------------------------------
# Seconds a web process answers update checks from its own memory before it looks at the
# shared cache again (publish, rollout and rollback changes reach every process within it).
PLATFORM_UPDATE_LOCAL_TTL = env.float("PLATFORM_UPDATE_LOCAL_TTL", default=1.0)
# Static channel manifests (for a CDN or nginx) are written under this storage prefix.
PLATFORM_MANIFEST_PREFIX = env.str("PLATFORM_MANIFEST_PREFIX", default="manifests")
# A binary patch is published only when it is at most this share of the full file.
PLATFORM_DELTA_MAX_RATIO = env.float("PLATFORM_DELTA_MAX_RATIO", default=0.5)
# A staged release is paused and rolled back when more than this share of its reported
# loads failed, once at least PLATFORM_ROLLOUT_MIN_LOAD_SAMPLES loads were reported.
PLATFORM_ROLLOUT_MAX_LOAD_FAILURE_RATE = env.float("PLATFORM_ROLLOUT_MAX_LOAD_FAILURE_RATE", default=0.05)
PLATFORM_ROLLOUT_MIN_LOAD_SAMPLES = env.int("PLATFORM_ROLLOUT_MIN_LOAD_SAMPLES", default=50)
# Largest misprediction photo an app may send (bytes).
PLATFORM_FEEDBACK_MAX_BYTES = env.int("PLATFORM_FEEDBACK_MAX_BYTES", default=10 * 1024 * 1024)
# Largest model file staff may import (bytes; a zipped .mlpackage counts as uploaded).
PLATFORM_MODEL_IMPORT_MAX_BYTES = env.int("PLATFORM_MODEL_IMPORT_MAX_BYTES", default=200 * 1024 * 1024)

# --- logs -----------------------------------------------------------------------------
# One handler on stderr for the web, workers and beat (ops.apps makes Celery use it).
# "json": one JSON object per line with time, level, logger, message and the request id or
# Celery task it belongs to (production units set it); "plain": for a developer's terminal.
PLATFORM_LOG_FORMAT = env.str("PLATFORM_LOG_FORMAT", default="plain")
if PLATFORM_LOG_FORMAT not in ("plain", "json"):
    raise ImproperlyConfigured(f"PLATFORM_LOG_FORMAT must be 'plain' or 'json', not {PLATFORM_LOG_FORMAT!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "ops.logs.ContextFilter"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "ops.logs.JsonFormatter"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": PLATFORM_LOG_FORMAT, "filters": ["context"]},
    },
    "root": {"handlers": ["console"], "level": env.str("PLATFORM_LOG_LEVEL", default="INFO")},
    "loggers": {
        # Django's own handlers (a second console copy under DEBUG, mail to ADMINS) are
        # replaced by the one above, so every line has the same shape.
        "django": {"handlers": [], "level": "INFO", "propagate": True},
        # Python warnings (Django routes them here) as log lines of the same shape too.
        "py.warnings": {"handlers": [], "propagate": True},
        # At DEBUG botocore logs every request signature, presigned download URLs' included
        # (each one a key to a file for AWS_QUERYSTRING_EXPIRE seconds): never below INFO.
        **{name: {"level": "INFO"} for name in ("botocore", "boto3", "s3transfer", "urllib3")},
    },
}
