"""Web page of the model registry: every published version with its release notes."""
from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from challenges.selectors import project_list_active
from training.plain_summary import model_version_plain_summary
from training.release_notes import release_notes_build
from training.selectors import model_version_list


def releases_page(request: HttpRequest) -> HttpResponse:
    """Published model versions per active project, newest first: a plain summary for volunteers,
    and the technical tables (holdout metrics, files, SHA-256) folded away except for staff."""
    projects = []
    for project in project_list_active():
        versions = list(model_version_list(project_slug=project.slug).select_related("snapshot"))
        releases = []
        for index, version in enumerate(versions):
            previous = versions[index + 1] if index + 1 < len(versions) else None
            releases.append(
                {
                    "version": version,
                    "previous": previous,
                    "notes": release_notes_build(
                        metrics=version.metrics, previous_metrics=previous.metrics if previous else None
                    ),
                    "artifacts": list(version.artifacts.all()),
                    "plain": model_version_plain_summary(version=version),
                }
            )
        projects.append({"project": project, "releases": releases})
    return render(request, "pages/releases.html", {"projects": projects})
