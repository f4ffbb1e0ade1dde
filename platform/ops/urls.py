"""URLs of the ops app: probes at the root (load balancers), the page inside the admin."""
from django.contrib import admin
from django.urls import path

from ops.views import healthz, ops_page, readyz

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    # Before admin.site.urls (config/urls.py), whose catch-all would answer 404 for it.
    path("admin/ops/", admin.site.admin_view(ops_page), name="ops-admin"),
]
