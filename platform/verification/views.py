"""Verification pages: one photo at a time, three big buttons (y / n / s on a keyboard)."""
from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from challenges.models import Project
from common.errors import DomainError
from common.files import stored_file_response
from verification.models import VerificationTask
from verification.selectors import projects_taking_part
from verification.services import NotTakingPart, task_next, task_vote


@login_required
def verify_page(request: HttpRequest) -> HttpResponse:
    """The current task in the chosen project (the first project the volunteer takes part in by default)."""
    projects = list(projects_taking_part(volunteer=request.user))
    slug = request.GET.get("project")
    project = get_object_or_404(Project, slug=slug) if slug else (projects[0] if projects else None)
    task, refusal = None, ""
    if project is not None:
        try:
            task = task_next(volunteer=request.user, project=project)
        except NotTakingPart as exc:
            refusal = exc.message
    context = {"projects": projects, "project": project, "task": task, "refusal": refusal,
               "answers": VerificationTask.Answer}
    return render(request, "verification/verify.html", context, status=403 if refusal else 200)


@login_required
@require_POST
def verify_vote(request: HttpRequest, task_id) -> HttpResponse:
    """The buttons' target: the same service as the API; back to the next photo."""
    task = get_object_or_404(VerificationTask.objects.select_related("project"), public_id=task_id,
                             volunteer=request.user)
    try:
        task_vote(task_id=task.public_id, volunteer=request.user, answer=request.POST.get("answer", ""))
    except DomainError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, "Thank you! Here is the next one.")
    return redirect(f"{reverse('verify')}?project={task.project.slug}")


@login_required
def verify_image(request: HttpRequest, task_id) -> HttpResponse:
    """The photo of a task, for the volunteer the task was given to and no one else (404)."""
    task = VerificationTask.objects.select_related("photo").filter(public_id=task_id, volunteer=request.user).first()
    if task is None:
        raise Http404("No such task.")
    photo = task.photo
    name = (photo.display_image or photo.image).name
    return stored_file_response(request, name=name, etag=f"{photo.sha256}-verify", content_type="image/jpeg")
