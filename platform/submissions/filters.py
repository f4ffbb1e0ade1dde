"""Query filters of the photo lists (django-filter): ?status=&challenge=&label=&project=&flag=&source=."""
from __future__ import annotations

import django_filters
from django import forms
from django.db.models import Q, QuerySet

from common.fields import StrictBooleanFormField
from submissions.models import Photo

FLAGS = {
    "near_duplicate": Q(near_duplicate_of__isnull=False),
    "model_disagreement": Q(flag_model_disagreement=True),
    "suspicious_volume": Q(flag_suspicious_volume=True),
}


class IdFilter(django_filters.NumberFilter):
    """A row id: a whole number in the database's integer range (else a 400, not a 500)."""

    field_class = forms.IntegerField

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("min_value", 1)
        kwargs.setdefault("max_value", 2**31 - 1)
        super().__init__(*args, **kwargs)


class StrictBooleanFilter(django_filters.BooleanFilter):
    """true or false; any other value is a 400 (django-filter would read it as "not given")."""

    field_class = StrictBooleanFormField


class StrictFilterSet(django_filters.FilterSet):
    """A parameter given with an empty value is a 400 (django-filter reads it as "not given")."""

    def is_valid(self) -> bool:
        valid = super().is_valid()
        getlist = getattr(self.data, "getlist", lambda name: [self.data.get(name)])
        for name in self.filters:
            if name in self.data and "" in getlist(name):
                self.form.add_error(name, "Give a value, or leave the parameter out.")
                valid = False
        return valid


class PhotoFilter(StrictFilterSet):
    """A volunteer's own photos."""

    status = django_filters.ChoiceFilter(choices=Photo.Status.choices)
    challenge = IdFilter(field_name="challenge_id", help_text="Challenge id.")
    label = django_filters.CharFilter(field_name="label__name", help_text="Label name.")
    project = django_filters.CharFilter(field_name="project__slug", help_text="Project slug.")
    featured = StrictBooleanFilter()

    class Meta:
        model = Photo
        fields = ["status", "challenge", "label", "project", "featured"]


class ModerationPhotoFilter(PhotoFilter):
    """The moderation queue: pending photos unless ?status= says otherwise (all: every status)."""

    status = django_filters.ChoiceFilter(
        choices=[*Photo.Status.choices, ("all", "All")], method="filter_status", empty_label=None,
        help_text="Default: pending.",
    )
    flag = django_filters.MultipleChoiceFilter(
        choices=[(name, name.replace("_", " ")) for name in FLAGS], method="filter_flag",
        help_text="Photos raising any of these flags (repeat the parameter for several).",
    )

    source = django_filters.ChoiceFilter(
        choices=Photo.Source.choices, help_text="Where photos came from (app: misprediction feedback)."
    )

    class Meta(PhotoFilter.Meta):
        fields = [*PhotoFilter.Meta.fields, "flag", "source"]

    def __init__(self, data=None, *args, **kwargs):
        data = data.copy() if data is not None else {}
        data.setdefault("status", Photo.Status.PENDING)
        super().__init__(data, *args, **kwargs)

    def filter_status(self, queryset: QuerySet[Photo], name: str, value: str) -> QuerySet[Photo]:
        return queryset if value == "all" else queryset.filter(status=value)

    def filter_flag(self, queryset: QuerySet[Photo], name: str, value: list[str]) -> QuerySet[Photo]:
        if not value:
            return queryset
        wanted = Q()
        for flag in value:
            wanted |= FLAGS[flag]
        return queryset.filter(wanted)
