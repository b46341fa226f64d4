"""serving.errors: the server's StatusError agrees with the client's exception tree on the canonical codes."""

from __future__ import annotations

import pytest

from retrieval_client.errors import CODES
from retrieval_client.transports.rest import HTTP_CODES
from serving.errors import HTTP_STATUS, StatusError


def test_server_and_client_name_the_same_canonical_codes():
    assert set(HTTP_STATUS) - {"OK"} == set(CODES)


def test_client_reads_every_http_status_the_server_writes_back_to_a_code_that_maps_to_it():
    for code, status in HTTP_STATUS.items():
        if code == "OK":
            continue
        assert status in HTTP_CODES, f"the client cannot read HTTP {status} ({code})"
        assert HTTP_STATUS[HTTP_CODES[status]] == status


@pytest.mark.parametrize("code", ["OK", "NOT_A_CODE", "not_found"])
def test_only_canonical_error_codes(code):
    with pytest.raises(ValueError, match="not a canonical error code"):
        StatusError(code, "x")


def test_status_error_carries_code_message_and_http_status():
    error = StatusError("RESOURCE_EXHAUSTED", "too big")
    assert (error.code, error.message, str(error), error.http_status) == (
        "RESOURCE_EXHAUSTED",
        "too big",
        "too big",
        429,
    )
