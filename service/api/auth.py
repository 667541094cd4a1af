"""Optional API-key authentication: with ``TBSEG_API_KEY`` or ``TBSEG_API_KEYS`` set, every route but the probes
and the web page's static files needs ``Authorization: Bearer <key>``; without either the service is open (for a
trusted network or a proxy in front).

A key from ``TBSEG_API_KEYS`` (``name=key,…``) names its user: the request's ``state.user`` holds that name, and a
review made with it records who made it (:mod:`service.api.routes.review`).
"""

from __future__ import annotations

import hmac
import json

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.problems import PROBLEM_MEDIA_TYPE, problem_body

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/", "/favicon.ico"})
OPEN_PREFIXES = ("/ui/",)


def is_open(path: str) -> bool:
    """Paths served without a key: the probes and the page's static files (they hold no data)."""
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


def request_user(request: Request) -> str | None:
    """The user the request's API key names, or None (an open service, or a key that names nobody)."""
    user = getattr(request.state, "user", None)
    return user if isinstance(user, str) else None


class ApiKeyMiddleware:
    """Refuses requests without an accepted bearer token with a 401 problem (constant-time comparisons).

    Args:
        app: the application.
        key_users: each accepted key and the user it names (None: a key that names nobody).
    """

    def __init__(self, app: ASGIApp, key_users: dict[str, str | None]) -> None:
        self.app = app
        self.accepted = [(f"Bearer {key}".encode(), user) for key, user in key_users.items()]

    def _user_of(self, given: bytes) -> tuple[bool, str | None]:
        found, user = False, None
        for expected, named in self.accepted:  # every key is compared, so timing says nothing of which matched
            if hmac.compare_digest(given, expected):
                found, user = True, named
        return found, user

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_open(scope["path"]):
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers") or []).get(b"authorization", b"")
        found, user = self._user_of(given)
        if found:
            scope.setdefault("state", {})["user"] = user
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
