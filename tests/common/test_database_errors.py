"""A lost database connection is a 503 the client retries, never a 500 page (the real restart:
tests/integration/test_faults_database.py)."""
import json

from django.db import InterfaceError, OperationalError
from django.test import RequestFactory

from common.errors import api_exception_handler
from common.middleware import DatabaseUnavailableMiddleware


def test_api_views_answer_503_json_with_retry_after():
    response = api_exception_handler(OperationalError("server closed the connection unexpectedly"), {})

    assert response.status_code == 503 and response["Retry-After"] == "5"
    assert response.data["error"]["code"] == "database_unavailable"


def test_plain_views_answer_json_under_api_and_a_page_elsewhere():
    middleware = DatabaseUnavailableMiddleware(lambda request: None)
    factory = RequestFactory()

    api = middleware.process_exception(factory.get("/api/mobile/v1/models/x/update"), InterfaceError("closed"))
    assert api.status_code == 503 and api["Retry-After"] == "5"
    assert json.loads(api.content)["error"]["code"] == "database_unavailable"

    page = middleware.process_exception(factory.get("/"), OperationalError("refused"))
    assert page.status_code == 503 and page["Content-Type"].startswith("text/html") and b"<h1>" in page.content

    assert middleware.process_exception(factory.get("/"), ValueError("a bug")) is None  # still a 500
