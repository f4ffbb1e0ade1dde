"""/releases/ in plain words for volunteers; the technical tables folded away except for staff."""
import pytest
from django.urls import reverse

from tests.pages.builders import make_model_version, make_photo, metrics
from training.models import DatasetSnapshot

pytestmark = pytest.mark.django_db


def _with_training_photos(version, project, volunteer):
    """Three training photos (two from a volunteer, one imported) and one holdout photo."""
    from_volunteer = [make_photo(project=project, volunteer=volunteer) for _ in range(2)]
    imported = make_photo(project=project, source="import")
    holdout = make_photo(project=project, volunteer=volunteer)
    manifest = {"photos": [{"photo": str(p.public_id), "split": "train"} for p in [*from_volunteer, imported]]
                + [{"photo": str(holdout.public_id), "split": "holdout"}]}
    DatasetSnapshot.objects.filter(pk=version.snapshot_id).update(manifest=manifest)


def test_each_version_has_a_plain_summary_with_its_n_and_interval(client, project, volunteer):
    version = make_model_version(project=project, version=4, metrics_dict=metrics(0.95, {"ants": (1, 1, 1), "bees": (1, 1, 1)}))
    _with_training_photos(version, project, volunteer)
    html = client.get(reverse("releases")).content.decode()
    # metrics() checks on 40 holdout photos: 38 right, Wilson 95% interval 0.835 to 0.986.
    assert (
        "Version 4 tells ants from bees right about 19 times in 20: 38 of 40 photos it never saw "
        "(95% interval 83% to 99%). 2 of the 3 photos it learnt from came from volunteers."
    ) in html


def test_the_technical_tables_are_folded_for_volunteers_and_open_for_staff(client, project, volunteer, staff):
    make_model_version(project=project, version=1, metrics_dict=metrics(0.75, {"ants": (0.7, 0.6, 0.65), "bees": (0.8, 0.9, 0.85)}))
    client.force_login(volunteer)
    assert '<details class="technical">' in client.get(reverse("releases")).content.decode()
    client.force_login(staff)
    assert '<details class="technical" open>' in client.get(reverse("releases")).content.decode()
