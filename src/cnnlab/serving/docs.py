"""The API docs page, ``/docs`` (Swagger UI), with every asset served by cnnlab itself.

FastAPI's own page loads Swagger UI from a CDN, so on a machine without the internet (the kind
cnnlab is built for) ``/docs`` was a blank page. The script, stylesheet and icon come from the
``fastapi-offline`` package (Swagger UI 5, which reads the OpenAPI 3.1 FastAPI writes; the
``swagger-ui-bundle`` package ships Swagger UI 4, which cannot), mounted at :data:`ASSETS`, with
FastAPI's documented self-hosting recipe. FastAPI's ``/redoc`` is off: ReDoc's bundle still fetches
its logo from its CDN.
"""

from __future__ import annotations

from importlib import resources

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = "/docs-assets"  # where the Swagger UI files are served from


def add_offline_docs(app: FastAPI) -> None:
    """Adds ``/docs`` (create ``app`` with ``docs_url=None, redoc_url=None``)."""
    folder = resources.files("fastapi_offline") / "static"
    app.mount(ASSETS, StaticFiles(directory=str(folder)), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"
    redirect_url = app.swagger_ui_oauth2_redirect_url or "/docs/oauth2-redirect"

    @app.get("/docs", include_in_schema=False)
    async def swagger(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")  # behind a proxy that mounts the app under a path
        return get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - API docs",
            oauth2_redirect_url=root + redirect_url,
            swagger_js_url=f"{root}{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS}/favicon.png",
        )

    @app.get(redirect_url, include_in_schema=False)
    async def oauth2_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()
