"""Schemathesis over the API: requests generated from the OpenAPI schema find no 5xx."""
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from config.wsgi import application

schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", application).include(path_regex=r"^/api/")


@pytest.fixture(autouse=True)
def _keep_the_test_connection():
    """Schemathesis calls the WSGI app directly, so each request's start and finish would
    close the database connection that holds the test's transaction (on PostgreSQL; SQLite
    in memory is never closed). Django's test client detaches the same handlers."""
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections

    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


def _token(user) -> str:
    from rest_framework.authtoken.models import Token

    return Token.objects.create(user=user).key


@pytest.fixture
def volunteer_token(volunteer, challenge):
    return _token(volunteer)


@pytest.fixture
def staff_token(staff, challenge, volunteer):
    """Staff, with a queue to moderate: staff endpoints get past their permission check."""
    from tests.moderation.conftest import make_photo

    make_photo(project=challenge.project, volunteer=volunteer)
    return _token(staff)


@pytest.mark.django_db
@schema.parametrize()
@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case, volunteer_token):
    case.call_and_validate(headers={"Authorization": f"Token {volunteer_token}"}, checks=[not_a_server_error])


@pytest.mark.django_db
@schema.parametrize()
@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors_as_staff(case, staff_token):
    case.call_and_validate(headers={"Authorization": f"Token {staff_token}"}, checks=[not_a_server_error])
