"""The home page: one project at a time (a remembered picker), labels with example photos,
and no label chosen for the volunteer."""
import pytest
from django.core.files.base import ContentFile

from tests.conftest import jpeg_bytes
from tests.factories import LabelFactory, ProjectFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def two_projects(project):
    birds = ProjectFactory(slug="birds", title="Garden birds")
    LabelFactory(project=birds, name="robin")
    return project, birds


def test_one_project_at_a_time_and_the_choice_is_remembered(client, volunteer, two_projects):
    client.force_login(volunteer)
    first = client.get("/").content.decode()
    assert 'id="project-picker"' in first and "Garden birds" in first
    assert first.count('class="upload-form"') == 1 and 'value="robin"' not in first
    chosen = client.get("/?project=birds").content.decode()
    assert chosen.count('class="upload-form"') == 1 and 'value="robin"' in chosen and 'value="ants"' not in chosen
    assert 'value="robin"' in client.get("/").content.decode()  # remembered
    unknown = client.get("/?project=nope")  # an unknown slug falls back to the remembered choice
    assert unknown.status_code == 200 and 'value="robin"' in unknown.content.decode()


def test_no_label_is_preselected_and_each_label_shows_its_example(client, volunteer, challenge):
    ants = challenge.labels.get(name="ants")
    ants.example_photo.save("ant.jpg", ContentFile(jpeg_bytes()))
    client.force_login(volunteer)
    page = client.get("/").content.decode()
    assert '<option value="" selected>' in page
    assert 'alt="Example photo of ants"' in page and f'data-example="/labels/{ants.pk}/example"' in page
    assert 'alt="Example photo of bees"' not in page  # no example uploaded for bees
