"""The error tree: every bad input becomes one of these, with a one-line message naming where it is.

InputError                 bad input from a user or a client (CLI exit 2, HTTP 400)
+-- ConfigError            a config or audit policy file ("file: field.path: reason")
+-- ManifestError          a cluster manifest in a --state directory
+-- ReviewError            an AdmissionReview body (HTTP 400)
    +-- BodyTooLarge       over server.maxBodyBytes (HTTP 413)
"""

from __future__ import annotations


class InputError(Exception):
    """Bad input; str(exc) is the one-line reason shown to the user."""


class ConfigError(InputError):
    """A config or audit policy file is malformed; the message names the file and the field path."""

    def __init__(self, source: str, path: str, reason: str) -> None:
        self.source = source
        self.path = path
        self.reason = reason
        where = f"{source}: {path}" if path else source
        super().__init__(f"{where}: {reason}")


class ManifestError(InputError):
    """A manifest in a --state directory cannot be read."""


class ReviewError(InputError):
    """An HTTP body is not a well-formed AdmissionReview."""

    status = 400


class BodyTooLarge(ReviewError):
    status = 413

    @classmethod
    def over(cls, limit: int) -> BodyTooLarge:
        """A body over `server.maxBodyBytes`: what the server's 413 and `kubefence review` say."""
        return cls(f"body exceeds server.maxBodyBytes ({limit} bytes)")
