"""Serializer fields for the ids, names and versions of the app protocol (PROTOCOL.md).

DRF's CharField strips surrounding whitespace before validating, so ``"install-0001\\n"``
would be accepted as ``"install-0001"`` while the update check (which parses its query
string itself) refused it. One behaviour everywhere: such a value is refused with a 400.
"""
from __future__ import annotations

import re

from rest_framework import serializers

from mobile_api import rollout


def exact_field(regex: re.Pattern, **kwargs) -> serializers.RegexField:
    """A field whose value must match ``regex`` (anchored, ASCII) as sent: nothing is stripped."""
    return serializers.RegexField(regex, trim_whitespace=False, **kwargs)


def install_id_field(**kwargs) -> serializers.RegexField:
    return exact_field(rollout.INSTALL_ID, max_length=128, **kwargs)


def name_field(**kwargs) -> serializers.RegexField:
    """A model, channel or label name: letters, digits, ``-`` and ``_``."""
    return exact_field(rollout.NAME, **kwargs)


def app_version_field(**kwargs) -> serializers.RegexField:
    return exact_field(rollout.APP_VERSION, max_length=32, **kwargs)
