"""Domain errors of the approval service; app.py maps them to HTTP statuses."""

from __future__ import annotations

from jit_hooks.errors import JitError


class ServiceDomainError(JitError):
    """Root of errors the service answers with a 4xx.

    ``code`` is the machine-readable ``error`` of the JSON body, ``field`` names
    the offending input (or None).
    """

    status = 400
    code = "bad_request"

    def __init__(self, detail: str, *, field: str | None = None):
        self.detail = detail
        self.field = field
        super().__init__(detail)


class InvalidInput(ServiceDomainError):
    """Raised when a value is well-formed JSON but not acceptable (names the field)."""

    status = 422
    code = "validation_error"


class Unauthorized(ServiceDomainError):
    """Raised when a token or password is missing, unknown, revoked or disabled."""

    status = 401
    code = "unauthorized"


class Forbidden(ServiceDomainError):
    """Raised when the caller is authenticated but not allowed to do this."""

    status = 403
    code = "forbidden"


class NotFound(ServiceDomainError):
    """Raised when an id or name is unknown (or not visible to the caller)."""

    status = 404
    code = "not_found"


class Conflict(ServiceDomainError):
    """Raised when the state does not allow the change (not pending, duplicate...)."""

    status = 409
    code = "conflict"
