"""uvicorn's HTTP/1.1 protocol (h11), answering requests it cannot parse with problem+json instead of text/plain.

h11 rejects a malformed request (an invalid ``Content-Length`` such as ``abc`` or ``-1``, a bad request line or
header) before the application sees it; uvicorn then sends its own ``400`` with a text body. This protocol sends
the documented ``application/problem+json`` document (with the security headers) instead. The connection is still
closed afterwards: after a framing error the rest of the stream cannot be trusted.
"""

from __future__ import annotations

import json

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from api.problems import PROBLEM_JSON, SECURITY_HEADERS, title
from nas.client.models import Problem, ProblemField

DETAIL = "the request is not valid HTTP/1.1 (e.g. its Content-Length is not a non-negative integer)"


def malformed_request_body() -> bytes:
    fe = ProblemField(field="request", message=DETAIL)
    problem = Problem(title=title(400), status=400, detail=DETAIL, field="request", errors=[fe])
    return json.dumps(problem.model_dump(mode="json", exclude_none=True)).encode()


class ProblemH11Protocol(H11Protocol):
    def send_400_response(self, msg: str) -> None:
        body = malformed_request_body()
        headers = [
            (b"content-type", PROBLEM_JSON.encode()),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
            *((k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()),
        ]
        self.transport.write(self.conn.send(h11.Response(status_code=400, headers=headers, reason=b"Bad Request")))
        self.transport.write(self.conn.send(h11.Data(data=body)))
        self.transport.write(self.conn.send(h11.EndOfMessage()))
        self.transport.close()
