"""Web pages about photos: a volunteer's own photos and the public gallery of featured photos."""
from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from submissions.opinion import photo_annotate_for_volunteer
from submissions.selectors import photo_list_featured, photo_list_for_volunteer

PAGE_SIZE = 24


@login_required
def my_photos_page(request: HttpRequest) -> HttpResponse:
    """The volunteer's photos with their moderation state, newest first, paginated."""
    page = Paginator(photo_list_for_volunteer(volunteer=request.user), PAGE_SIZE).get_page(request.GET.get("page"))
    page.object_list = photo_annotate_for_volunteer(page.object_list)
    return render(request, "pages/my_photos.html", {"page": page})


def gallery_page(request: HttpRequest) -> HttpResponse:
    """Featured photos for everyone, served as display copies (never the full-size image)."""
    page = Paginator(photo_list_featured(), PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "pages/gallery.html", {"page": page})
