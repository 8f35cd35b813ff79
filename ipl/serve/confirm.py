"""The seller's ``confirmed`` values: parsed and checked before any work is done.

``parse_confirmed(raw, known_keys, max_chars, max_items)`` takes the form field (a JSON
object key -> value) or the chat endpoint's ``confirmed`` object and returns ``{key: value}``
with each key in its template spelling. Every problem is a 422 ``invalid_field`` naming the
field (``confirmed`` or ``confirmed.<key>``): not JSON, not an object, too many entries, a key
no category's template has, a value that is not text, empty, longer than ``max_chars``, or
carrying contact details or risky wording (the same checks as retrieved values).
"""
from __future__ import annotations

import json
from typing import Any, Iterable

from ipl.serve.errors import ApiError
from ipl.text.normalize import normalize
from ipl.text.pii import find_pii
from ipl.text.safety import RiskTerms, find_risks

_TERMS = RiskTerms()


def parse_confirmed(raw: Any, known_keys: Iterable[str], max_chars: int, max_items: int) -> dict[str, str]:
    if raw is None:
        return {}
    if isinstance(raw, str):
        if not raw.strip():
            return {}
        try:
            raw = json.loads(raw)
        except ValueError as exc:
            raise ApiError("invalid_field", f"confirmed must be a JSON object of attribute -> value: {exc}") from None
    if not isinstance(raw, dict):
        raise ApiError("invalid_field", f"confirmed must be a JSON object of attribute -> value, got "
                       f"{type(raw).__name__}")
    if len(raw) > max_items:
        raise ApiError("invalid_field", f"confirmed has {len(raw)} values; at most {max_items}")
    by_lower = {k.lower(): k for k in known_keys}
    out: dict[str, str] = {}
    for key, value in raw.items():
        canonical = by_lower.get(str(key).strip().lower())
        if canonical is None:
            shown = ", ".join(sorted(by_lower.values())[:30])
            raise ApiError("invalid_field", f"confirmed.{key}: unknown attribute; known attributes: {shown}")
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ApiError("invalid_field", f"confirmed.{key}: the value must be text, got {type(value).__name__}")
        text = normalize(str(value))
        if not text:
            raise ApiError("invalid_field", f"confirmed.{key}: the value is empty")
        if len(text) > max_chars:
            raise ApiError("invalid_field", f"confirmed.{key}: the value is {len(text)} characters; at most "
                           f"{max_chars}")
        if any(c in text for c in "<>{}"):
            raise ApiError("invalid_field", f"confirmed.{key}: the value may not contain < > {{ }}")
        if find_pii(text):
            raise ApiError("invalid_field", f"confirmed.{key}: the value carries contact details ("
                           f"{find_pii(text)[0].kind}); they are not allowed in a listing")
        if find_risks(text, _TERMS):
            raise ApiError("invalid_field", f"confirmed.{key}: the value carries risky wording")
        out[canonical] = text
    return out
