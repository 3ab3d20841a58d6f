"""Exceptions: one class per kind of HTTP error, built from the service's
error envelope ``{"error": {"code", "message", "details"}}``."""

from __future__ import annotations

from typing import Any


class JesseMCPError(Exception):
    """Base of every error this client raises."""


class APIError(JesseMCPError):
    """An error answer of the service: ``.status`` (HTTP), ``.code`` (the
    envelope's stable machine-readable code), ``.message`` and ``.details``."""

    def __init__(self, status: int, code: str, message: str, details: Any = None, *, method: str = "", url: str = ""):
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.method = method
        self.url = url
        where = f" ({method} {url})" if method else ""
        super().__init__(f"{status} {code}: {message}{where}")


class InvalidRequest(APIError):
    """400 or 422: the request is wrong; ``.message``/``.details`` say what to change."""


class Unauthorized(APIError):
    """401: no token or an unknown one."""


class Forbidden(APIError):
    """403: the token lacks the scope (or the Origin is not allowed)."""


class NotFound(APIError):
    """404: no such job, series, strategy or chart."""


class Conflict(APIError):
    """409: e.g. ``result_not_ready``, ``job_has_no_result``, ``idempotency_key_reused``."""


class PreconditionFailed(APIError):
    """412: an ``If-Match`` did not match (a concurrent edit)."""


class PayloadTooLarge(APIError):
    """413: the body (or a strategy source) exceeds the service's limit."""


class ServiceUnavailable(APIError):
    """503 ``unavailable``: the store or the queue is unreachable for now."""


class ServerError(APIError):
    """Any other 5xx."""


_BY_STATUS: dict[int, type[APIError]] = {
    400: InvalidRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    412: PreconditionFailed,
    413: PayloadTooLarge,
    422: InvalidRequest,
    503: ServiceUnavailable,
}


def error_class(status: int) -> type[APIError]:
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    return ServerError if status >= 500 else APIError


class JobFailed(JesseMCPError):
    """A job ended ``failed`` (or ``cancelled``, see :class:`JobCancelled`).
    ``.error`` is the job's error envelope (``code``, ``message``, ``details``)."""

    def __init__(self, job: Any, error: dict | None):
        self.job = job
        self.error = error or {}
        self.code = self.error.get("code")
        self.message = self.error.get("message")
        self.details = self.error.get("details")
        super().__init__(f"job {job.id} ({job.kind}) {job.status}: {self.code}: {self.message}")


class JobCancelled(JobFailed):
    """The job ended ``cancelled``."""


class WaitTimeout(JesseMCPError, TimeoutError):
    """``Job.wait(timeout=...)`` ran out before the job finished."""
