"""The web page for the lab (``/``): static HTML, CSS and JavaScript modules from ``service/web/``, no build step
and no CDN (many labs are offline). The page works on the API only: everything it does, a script can do.

``/`` is the page with one line filled in by the server: whether the service needs an API key (so the page asks
for it before its first call instead of provoking a 401). ``/ui/*`` are its files. Neither holds any data, so both
are served without a key (:mod:`service.api.auth`).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

WEB_DIR = Path(__file__).resolve().parents[2] / "web"
AUTH_MARK = '<meta name="tbseg-auth" content="open">'

router = APIRouter(include_in_schema=False)


@router.get("/", response_class=HTMLResponse)
def page(request: Request) -> HTMLResponse:
    html = (WEB_DIR / "index.html").read_text(encoding="utf-8")
    if request.app.state.service.settings.key_users:
        html = html.replace(AUTH_MARK, '<meta name="tbseg-auth" content="key">')
    return HTMLResponse(html, headers={"Cache-Control": "no-cache"})


def static_files() -> StaticFiles:
    """The page's files, mounted at ``/ui``."""
    return StaticFiles(directory=WEB_DIR)
