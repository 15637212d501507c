"""The OpenAPI docs page, with Swagger UI's files served by the gateway itself.

FastAPI's default page loads Swagger UI from a CDN; a gateway on a private network has no
internet, so the assets come from a package instead: `fastapi-offline`, which bundles
Swagger UI 5 (FastAPI writes OpenAPI 3.1, which Swagger UI 4 cannot read: it renders a blank
page saying the definition has no valid version field).
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

DOCS_PATH = "/docs"
ASSETS_PATH = "/docs/assets"


def swagger_ui_assets() -> str:
    """The directory of Swagger UI's files (`swagger-ui-bundle.js`, `swagger-ui.css`)."""
    return str(files("fastapi_offline") / "static")


def add_docs(app: FastAPI) -> None:
    """Serve `/docs` (Swagger UI) and its assets; `app.openapi_url` must be set."""
    app.mount(ASSETS_PATH, StaticFiles(directory=swagger_ui_assets()), name="swagger-ui-assets")
    openapi_url = app.openapi_url or "/openapi.json"

    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} - docs",
            swagger_js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_PATH}/favicon.png",
        )

    app.add_api_route(DOCS_PATH, swagger_ui, include_in_schema=False, methods=["GET"])
