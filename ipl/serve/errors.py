"""API errors: one exception with an HTTP status and a stable code, rendered as
``{"error": {"code", "message"}}``. Clients switch on ``code``; messages are for people.
"""
from __future__ import annotations

from typing import Optional

# code -> HTTP status; the codes are part of the API (README lists them)
CODES = {
    "malformed_request": 400,
    "malformed_multipart": 400,
    "invalid_field": 422,
    "no_photos": 422,
    "too_many_photos": 422,
    "empty_photo": 422,
    "not_an_image": 415,
    "unsupported_image_format": 415,
    "unsupported_media_type": 415,
    "truncated_image": 422,
    "corrupt_image": 422,
    "decompression_bomb": 422,
    "image_too_large": 422,
    "image_too_small": 422,
    "too_many_frames": 422,
    "body_too_large": 413,
    "body_timeout": 408,
    "photo_too_large": 413,
    "unsupported_language": 422,
    "unknown_category": 422,
    "prohibited_content": 422,
    "remote_image_url": 422,
    "not_found": 404,
    "unknown_draft": 404,
    "text_too_long": 413,
    "method_not_allowed": 405,
    "overloaded": 503,
    "unavailable": 503,
    "timeout": 504,
    "internal": 500,
}


class ApiError(Exception):
    def __init__(self, code: str, message: str, status: Optional[int] = None, retry_after: Optional[int] = None):
        if code not in CODES and status is None:
            raise ValueError(f"unknown error code {code!r}")
        super().__init__(message)
        self.code, self.message = code, message
        self.status = status or CODES[code]
        self.retry_after = retry_after

    def body(self) -> dict:
        return {"error": {"code": self.code, "message": self.message}}

    def __reduce__(self):  # crosses Ray process boundaries intact
        return (ApiError, (self.code, self.message, self.status, self.retry_after))
