"""The one error type of the local server, carrying a canonical status name: TF Serving's ``Status``.

TF Serving reports failures as a ``tensorflow::Status``: a canonical code plus a message. Every layer of
the local server raises :class:`StatusError` with the same code names, and each transport maps the code
in one place: REST through :data:`HTTP_STATUS` (TF Serving's ``ToHTTPStatusCode``), gRPC through the
``grpc.StatusCode`` of the same name.

It is not the client's ``retrieval_client.errors.ServingError`` tree, and is named apart from it on purpose. The
client's is a public API for applications: one class per code (``NotFoundError`` is also a LookupError,
``UnavailableError`` a ConnectionError), built from a message alone, raised for failures no server reported
(a refused connection) and retried by the client's policy. This one is the server's internal carrier of a
``tensorflow::Status`` to the transports' one mapping table; raising the client's classes in the server
would tie the stand-in server to the client package's API and blur which side a traceback comes from.
What the two share is the list of canonical code names, and tests/serving/test_errors.py checks that the
two lists, and the client's reading of the HTTP statuses below, agree.
"""

from __future__ import annotations

# tensorflow_serving/model_servers/http_server.cc (ToHTTPStatusCode), in the order of the codes' numbers in
# tensorflow/core/protobuf/error_codes.proto (OK = 0, CANCELLED = 1, ..., UNAUTHENTICATED = 16).
HTTP_STATUS = {
    "OK": 200,
    "CANCELLED": 500,
    "UNKNOWN": 500,
    "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400,
    "ABORTED": 409,
    "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DATA_LOSS": 500,
    "UNAUTHENTICATED": 401,
}


_CODE_NAMES = dict(enumerate(HTTP_STATUS))
_CODE_NUMBERS = {name: number for number, name in _CODE_NAMES.items()}


def code_name(number: int) -> str:
    """The canonical name of an ``error_codes.proto`` number; UNKNOWN for a number it does not define."""
    return _CODE_NAMES.get(number, "UNKNOWN")


def code_number(name: str) -> int:
    """The ``error_codes.proto`` number of a canonical name ("OK" is 0)."""
    return _CODE_NUMBERS[name]


class StatusError(Exception):
    """A failed request or load: ``code`` is a canonical status name, ``message`` TF Serving's text."""

    def __init__(self, code: str, message: str) -> None:
        if code not in HTTP_STATUS or code == "OK":
            raise ValueError(f"not a canonical error code: {code!r}")
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.code]

    def __repr__(self) -> str:
        return f"StatusError({self.code}, {self.message!r})"


def invalid_argument(*parts: object) -> StatusError:
    """An INVALID_ARGUMENT error whose message is ``parts`` joined as TF Serving's ``errors::InvalidArgument``
    (``absl::StrCat``) joins them."""
    return StatusError("INVALID_ARGUMENT", "".join(str(p) for p in parts))
