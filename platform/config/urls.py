"""URLconf: each app lists its API routes (api_urlpatterns) and pages (urlpatterns).

Loading it must not import torch (tests/test_layout.py checks).
"""
from importlib import import_module

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

APPS = ("accounts", "challenges", "submissions", "leaderboards", "newsletter", "verification", "training")
_modules = [import_module(f"{app}.urls") for app in APPS]

urlpatterns = [
    # First: every installed app polls here, and Django tries the routes in order.
    path("api/mobile/v1/", include("mobile_api.urls")),
    # /healthz, /readyz and /admin/ops/: before admin/, whose catch-all would take admin/ops/.
    path("", include("ops.urls")),
    path("admin/", admin.site.urls),
    path("api/v1/", include([route for module in _modules for route in module.api_urlpatterns])),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves its set-up script as a file: the Content-Security-Policy allows no inline script.
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="swagger-ui"),
]
for module in _modules:
    urlpatterns += module.urlpatterns

# Errors outside DRF views: JSON under /api/, Django's pages elsewhere (common/error_views.py).
handler400 = "common.error_views.bad_request"
handler403 = "common.error_views.permission_denied"
handler404 = "common.error_views.page_not_found"
handler500 = "common.error_views.server_error"
