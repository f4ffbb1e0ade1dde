"""Web pages: today's challenge with the upload form, and photo images."""
from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from challenges.models import Challenge
from challenges.selectors import challenge_is_open, challenge_window, label_list_with_progress, project_list_active
from challenges.services import challenge_get_or_generate_today
from common.errors import DomainError, NotFound
from common.files import stored_file_response
from submissions.models import Photo
from submissions.opinion import photo_annotate_for_volunteer
from submissions.selectors import photo_get_viewable, photo_list_for_volunteer
from submissions.services import photo_create
from submissions.signed_urls import COPIES, PRIVATE_CACHE_CONTROL, SIGNATURE_PARAMETER, photo_copy_signature_valid

# Featured photos are public and may change (unfeatured, deleted): any cache may keep them,
# but revalidates each time (a cheap 304 thanks to the ETag), so a withdrawn one is gone at once.
PUBLIC_CACHE_CONTROL = "public, no-cache"


class UploadForm(forms.Form):
    label = forms.CharField(max_length=64)
    image = forms.FileField(
        widget=forms.ClearableFileInput(attrs={"accept": "image/jpeg,image/png,image/webp,image/heic,image/heif", "capture": "environment"})
    )


PROJECT_SESSION_KEY = "home_project"


def home_page(request: HttpRequest) -> HttpResponse:
    """Today's challenge of one project (a picker when there are several), and my latest photos.

    The project is ?project=<slug>, else the one chosen last time (kept in the session), else
    the first active one: a volunteer meets one challenge at a time, not every project stacked.
    """
    projects = list(project_list_active())
    by_slug = {p.slug: p for p in projects}
    project = by_slug.get(request.GET.get("project", ""))
    if project is not None:
        request.session[PROJECT_SESSION_KEY] = project.slug
    else:
        project = by_slug.get(request.session.get(PROJECT_SESSION_KEY, ""), projects[0] if projects else None)
    boards = []
    if project is not None:
        challenge = challenge_get_or_generate_today(project=project)
        boards.append(
            {
                "project": project,
                "challenge": challenge,
                "is_open": challenge_is_open(challenge=challenge),
                "window": challenge_window(challenge=challenge),
                "labels": label_list_with_progress(project=project),
            }
        )
    photos = (
        photo_annotate_for_volunteer(photo_list_for_volunteer(volunteer=request.user)[:24])
        if request.user.is_authenticated
        else []
    )
    return render(
        request, "home.html", {"boards": boards, "projects": projects, "project": project, "photos": photos,
                               "form": UploadForm()}
    )


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
        messages.success(
            request,
            "Thank you! People now check that its label is right (staff, or other volunteers where the "
            "project lets them); your points arrive when it is approved.",
        )
    return redirect("home")


@login_required
def photo_image(request: HttpRequest, photo_id) -> HttpResponse:
    """A photo's stored (metadata-free) image: for its volunteer and for staff only.

    Anyone else gets the same 404 as for a missing photo, so its existence does not leak.
    """
    photo = get_object_or_404(Photo, public_id=photo_id)
    if not (request.user.is_staff or photo.volunteer_id == request.user.pk):
        raise Http404("No such photo.")
    content_type = "image/png" if photo.image.name.endswith(".png") else "image/jpeg"
    return stored_file_response(
        request, name=photo.image.name, etag=photo.sha256, content_type=content_type,
        cache_control=PRIVATE_CACHE_CONTROL,
    )


def photo_display(request: HttpRequest, photo_id) -> HttpResponse:
    """A photo's display copy (long side 1280): its volunteer, staff, anyone if featured, or a signed URL."""
    return _photo_copy_response(request, photo_id, view_name="photo-display")


def photo_thumbnail(request: HttpRequest, photo_id) -> HttpResponse:
    """A photo's thumbnail (long side 320): its volunteer, staff, anyone if featured, or a signed URL."""
    return _photo_copy_response(request, photo_id, view_name="photo-thumbnail")


def _photo_copy_response(request: HttpRequest, photo_id, *, view_name: str) -> HttpResponse:
    field, copy = COPIES[view_name]
    signature = request.GET.get(SIGNATURE_PARAMETER)
    photo = None
    if signature is not None and photo_copy_signature_valid(public_id=photo_id, copy=copy, signature=signature):
        # The API handed this URL to someone allowed to see the photo (PhotoOutput).
        photo = Photo.objects.filter(public_id=photo_id).first()
    else:
        try:
            photo = photo_get_viewable(user=request.user, public_id=photo_id)
        except NotFound:
            pass
    if photo is None:
        # Not login_required: the public gallery is open, and a 404 (not a login
        # redirect) keeps other photos' existence private. An expired or altered
        # signature is a 404 too: the API gives a fresh URL.
        raise Http404("No such photo.")
    name = getattr(photo, field).name
    if not name:
        raise Http404("This photo has no such copy.")
    public = photo.status == Photo.Status.APPROVED and photo.featured
    return stored_file_response(
        request, name=name, etag=f"{photo.sha256}-{copy}", content_type="image/jpeg",
        cache_control=PUBLIC_CACHE_CONTROL if public else PRIVATE_CACHE_CONTROL,
    )
