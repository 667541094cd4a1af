"""Optional API-key authentication: with ``TBSEG_API_KEY`` set, every route but the probes needs
``Authorization: Bearer <key>``; without it the service is open (for a trusted network or a proxy in front)."""

from __future__ import annotations

import hmac
import json

from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.problems import PROBLEM_MEDIA_TYPE, problem_body

OPEN_PATHS = frozenset({"/healthz", "/readyz"})


class ApiKeyMiddleware:
    """Refuses requests without the right bearer token with a 401 problem (constant-time comparison)."""

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self.expected = f"Bearer {api_key}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers") or []).get(b"authorization", b"")
        if hmac.compare_digest(given, self.expected):
            await self.app(scope, receive, send)
            return
        detail = (
            "the API key is not valid" if given else "this service needs an API key: send 'Authorization: Bearer <key>'"
        )
        request_id = scope.get("state", {}).get("request_id")
        body = json.dumps(problem_body(401, "unauthorized", "Unauthorized", detail, scope["path"], request_id)).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", b'Bearer realm="tbseg"'),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
