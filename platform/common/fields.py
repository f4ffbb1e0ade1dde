"""Input that takes what the OpenAPI schema says, and nothing DRF or Django would guess at.

A JSON body carries types: DRF would still take 1 or "yes" for a boolean, "7" for an
integer and 7 for a string; ``StrictInput`` refuses them (400, naming the field), as the
schema promises. Forms and query strings carry only strings, so for them DRF's reading of
"7" or "true" stays. django-filter's boolean filter reads any value it does not know
(``?featured=null``) as "not given"; ``StrictBooleanFormField`` refuses it.
"""
from __future__ import annotations

from django import forms
from django.http import QueryDict
from rest_framework import serializers

_WORDS = {"true": True, "false": False}


def _json_type_ok(field: serializers.Field, value) -> bool:
    """Whether a JSON value has the type the field is documented with (null: DRF decides)."""
    if value is None:
        return True
    if isinstance(field, serializers.BooleanField):
        return isinstance(value, bool)
    if isinstance(field, serializers.IntegerField):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(field, (serializers.FloatField, serializers.DecimalField)):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(field, serializers.CharField):  # RegexField, SlugField, EmailField, ...
        return isinstance(value, str)
    if isinstance(field, serializers.ChoiceField):
        return any(type(value) is type(choice) for choice in field.choices)
    return True


class StrictInput(serializers.Serializer):
    """An input serializer whose JSON fields must have their documented JSON types."""

    def to_internal_value(self, data):
        if isinstance(data, dict) and not isinstance(data, QueryDict):
            errors = {
                field.field_name: [f"Expected a {_json_type_name(field)}, not {type(data[field.field_name]).__name__}."]
                for field in self.fields.values()
                if not field.read_only and field.field_name in data
                and not _json_type_ok(field, data[field.field_name])
            }
            if errors:
                raise serializers.ValidationError(errors)
        return super().to_internal_value(data)


def _json_type_name(field: serializers.Field) -> str:
    if isinstance(field, serializers.BooleanField):
        return "boolean"
    if isinstance(field, (serializers.IntegerField, serializers.FloatField, serializers.DecimalField)):
        return "number"
    return "string" if isinstance(field, (serializers.CharField, serializers.ChoiceField)) else "value"


class StrictBooleanFormField(forms.Field):
    """A query-string boolean for django-filter: "true", "false" or absent/empty (no filter)."""

    widget = forms.TextInput

    def to_python(self, value):
        if value in (None, ""):
            return None
        if value in _WORDS:
            return _WORDS[value]
        raise forms.ValidationError("Use true or false.", code="invalid")
