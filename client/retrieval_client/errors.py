"""One exception tree for both transports, named by TF Serving's canonical status codes.

The same failure raises the same class over REST and gRPC; ``code`` holds the canonical name and
``message`` the server's own text (or the lower-level reason when no server answered). Each transport maps
its errors in one place (``transports/rest.py``: HTTP status, error JSON, requests exceptions;
``transports/grpc.py``: ``grpc.StatusCode``), chaining the original (``raise ... from exc``)::

    ServingError                   code            raised for, among others
    ├── CancelledError             CANCELLED
    ├── UnknownError               UNKNOWN         unparseable 2xx body, unexpected transport failure
    ├── InvalidArgumentError       INVALID_ARGUMENT  bad inputs, unknown label, k above K (also ValueError)
    ├── DeadlineExceededError      DEADLINE_EXCEEDED the call's deadline passed (also TimeoutError)
    ├── NotFoundError              NOT_FOUND       unknown model or version (also LookupError)
    ├── AlreadyExistsError         ALREADY_EXISTS
    ├── PermissionDeniedError      PERMISSION_DENIED
    ├── ResourceExhaustedError     RESOURCE_EXHAUSTED
    ├── FailedPreconditionError    FAILED_PRECONDITION unknown signature (gRPC; REST says 400)
    ├── AbortedError               ABORTED
    ├── OutOfRangeError            OUT_OF_RANGE
    ├── UnimplementedError         UNIMPLEMENTED
    ├── InternalError              INTERNAL        a response without the outputs the model promises
    ├── UnavailableError           UNAVAILABLE     connection refused, server starting (also ConnectionError)
    │   └── TlsError               UNAVAILABLE     TLS handshake failed: certificate not trusted, TLS on one side only
    ├── DataLossError              DATA_LOSS
    └── UnauthenticatedError       UNAUTHENTICATED

REST folds several codes into one HTTP status (TF Serving's ``ToHTTPStatusCode``): a 400 arrives as
INVALID_ARGUMENT even where gRPC says FAILED_PRECONDITION or OUT_OF_RANGE, a 500 as INTERNAL, a 409 as
ABORTED. Only UNAVAILABLE is retried (see ``retrieval_client.settings.Retry``), and not its TlsError: a certificate that
was not trusted will not be on the next try (gRPC says UNAVAILABLE for it; it is a subclass so that both
transports raise the same class and ``except UnavailableError`` still catches it).
"""

from __future__ import annotations

__all__ = [
    "CODES",
    "AbortedError",
    "AlreadyExistsError",
    "CancelledError",
    "DataLossError",
    "DeadlineExceededError",
    "FailedPreconditionError",
    "InternalError",
    "InvalidArgumentError",
    "NotFoundError",
    "OutOfRangeError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "ServingError",
    "TlsError",
    "UnauthenticatedError",
    "UnavailableError",
    "UnimplementedError",
    "UnknownError",
    "error_for",
]


class ServingError(Exception):
    """A failed call: ``code`` is the canonical status name, ``message`` the server's (or the cause's) text."""

    code = "UNKNOWN"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class CancelledError(ServingError):
    code = "CANCELLED"


class UnknownError(ServingError):
    code = "UNKNOWN"


class InvalidArgumentError(ServingError, ValueError):
    code = "INVALID_ARGUMENT"


class DeadlineExceededError(ServingError, TimeoutError):
    code = "DEADLINE_EXCEEDED"


class NotFoundError(ServingError, LookupError):
    code = "NOT_FOUND"


class AlreadyExistsError(ServingError):
    code = "ALREADY_EXISTS"


class PermissionDeniedError(ServingError):
    code = "PERMISSION_DENIED"


class ResourceExhaustedError(ServingError):
    code = "RESOURCE_EXHAUSTED"


class FailedPreconditionError(ServingError):
    code = "FAILED_PRECONDITION"


class AbortedError(ServingError):
    code = "ABORTED"


class OutOfRangeError(ServingError):
    code = "OUT_OF_RANGE"


class UnimplementedError(ServingError):
    code = "UNIMPLEMENTED"


class InternalError(ServingError):
    code = "INTERNAL"


class UnavailableError(ServingError, ConnectionError):
    code = "UNAVAILABLE"


class TlsError(UnavailableError):
    """The TLS handshake failed (an untrusted or mismatched certificate, a client certificate refused, TLS
    spoken to a plain port or the reverse); the message names TLS and the reason. Never retried."""


class DataLossError(ServingError):
    code = "DATA_LOSS"


class UnauthenticatedError(ServingError):
    code = "UNAUTHENTICATED"


CODES: dict[str, type[ServingError]] = {
    cls.code: cls
    for cls in (
        CancelledError,
        UnknownError,
        InvalidArgumentError,
        DeadlineExceededError,
        NotFoundError,
        AlreadyExistsError,
        PermissionDeniedError,
        ResourceExhaustedError,
        FailedPreconditionError,
        AbortedError,
        OutOfRangeError,
        UnimplementedError,
        InternalError,
        UnavailableError,
        DataLossError,
        UnauthenticatedError,
    )
}


def error_for(code: str, message: str) -> ServingError:
    """The exception for a canonical code name; an unknown name becomes UNKNOWN, keeping the name in the text."""
    cls = CODES.get(code)
    if cls is None:
        return UnknownError(f"{message} (status {code})" if code else message)
    return cls(message)
