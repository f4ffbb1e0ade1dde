"""Request body parsers that answer hostile JSON with a 400, never a 500.

Python's json module recurses once per nesting level: ``'[' * 3000`` (or even ~990 levels,
depending on how deep the stack already is) raises RecursionError, which DRF's JSONParser
does not catch. No request of this API nests deeper than a few levels, so bodies nested
deeper than MAX_JSON_DEPTH are refused before json ever sees them.
"""
from __future__ import annotations

import codecs

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser as DrfJSONParser
from rest_framework.parsers import get_encoding
from rest_framework.utils import json

# Far above any honest body (the deepest request, telemetry, nests 3 levels), far below the
# interpreter's recursion limit even when the stack is already deep.
MAX_JSON_DEPTH = 32


def json_depth_exceeds(text: str, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether the JSON text opens more than ``limit`` arrays/objects at once (strings skipped).

    A linear scan, so it cannot recurse itself; malformed text is left to the parser.
    """
    if text.count("[") + text.count("{") <= limit:
        return False  # most bodies: no need to walk them
    depth = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif char in "]}":
            depth -= 1
    return False


class JSONParser(DrfJSONParser):
    """DRF's JSON parser, refusing bodies nested deeper than MAX_JSON_DEPTH (400 parse_error)."""

    def parse(self, stream, media_type=None, parser_context=None):
        encoding = get_encoding(parser_context or {})
        try:
            text = codecs.getreader(encoding)(stream).read()
        except (UnicodeDecodeError, LookupError) as exc:
            raise ParseError(f"JSON parse error - the body is not valid {encoding}.") from exc
        if json_depth_exceeds(text):
            raise ParseError(f"JSON parse error - nested deeper than {MAX_JSON_DEPTH} levels.")
        try:
            parse_constant = json.strict_constant if self.strict else None
            return json.loads(text, parse_constant=parse_constant)
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from exc
        except RecursionError as exc:  # belt and braces: the scan above should make this unreachable
            raise ParseError("JSON parse error - nested too deeply.") from exc
