"""Web pages: today's challenge with the upload form, and photo images."""
from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from challenges.models import Challenge
from challenges.selectors import label_list_with_approved_counts, project_list_active
from challenges.services import challenge_get_or_generate_today
from common.errors import DomainError
from common.files import stored_file_response
from submissions.models import Photo
from submissions.selectors import photo_list_for_volunteer
from submissions.services import photo_create


class UploadForm(forms.Form):
    label = forms.CharField(max_length=64)
    image = forms.FileField(
        widget=forms.ClearableFileInput(attrs={"accept": "image/jpeg,image/png,image/webp,image/heic,image/heif", "capture": "environment"})
    )


def home_page(request: HttpRequest) -> HttpResponse:
    """Today's challenge of every active project, and the volunteer's latest photos."""
    boards = []
    for project in project_list_active():
        boards.append(
            {
                "project": project,
                "challenge": challenge_get_or_generate_today(project=project),
                "labels": label_list_with_approved_counts(project=project),
            }
        )
    photos = photo_list_for_volunteer(volunteer=request.user)[:24] if request.user.is_authenticated else []
    return render(request, "home.html", {"boards": boards, "photos": photos, "form": UploadForm()})


@login_required
@require_POST
def photo_upload_page(request: HttpRequest, challenge_id: int) -> HttpResponse:
    """The upload form's target: the same service as the REST API."""
    challenge = get_object_or_404(Challenge.objects.select_related("project"), pk=challenge_id)
    form = UploadForm(request.POST, request.FILES)
    if not form.is_valid():
        messages.error(request, "Choose a label and a photo.")
        return redirect("home")
    image = form.cleaned_data["image"]
    try:
        photo_create(
            project=challenge.project,
            challenge=challenge,
            label_name=form.cleaned_data["label"],
            upload=image,
            size=image.size,
            volunteer=request.user,
        )
    except DomainError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, "Thank you! Your photo is waiting for moderation.")
    return redirect("home")


@login_required
def photo_image(request: HttpRequest, photo_id) -> HttpResponse:
    """A photo's stored (metadata-free) image: for its volunteer and for staff only."""
    photo = get_object_or_404(Photo, public_id=photo_id)
    if not (request.user.is_staff or photo.volunteer_id == request.user.pk):
        raise PermissionDenied
    return stored_file_response(request, name=photo.image.name, etag=photo.sha256, content_type="image/jpeg")
