"""API docs that render without the internet: Swagger UI's files served by the API itself.

Litestar's render plugins load their scripts, styles and favicon from a CDN, so on a
machine without internet access the pages are blank. Swagger UI's release files come
from a pinned Python package (`swagger-ui-bundle-v2`, Swagger UI 5: the first major
version that reads OpenAPI 3.1, the version Litestar writes) and are served here, under a
path that names the version so browsers may cache them for good.

Scalar is not offered: no package on PyPI ships its standalone script, and a page whose
script cannot be had offline would be blank (`/schema/scalar` answers 404).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from litestar import Router, get
from litestar.exceptions import NotFoundException
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.params import FromPath
from litestar.response import File
from swagger_ui_bundle import swagger_ui_path

#: The directory of Swagger UI's release files inside the package ("swagger-ui-5.31.0").
SWAGGER_UI_DIR: Final = Path(str(swagger_ui_path))
#: Where the API serves them: under the OpenAPI path, versioned so caches never go stale.
ASSETS_PATH: Final = f"/schema/assets/{SWAGGER_UI_DIR.name}"

#: The only files the page needs, with their media types: nothing else of the package
#: (its demo index.html points at a public petstore) is served.
ASSETS: Final[dict[str, str]] = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui-standalone-preset.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "favicon-32x32.png": "image/png",
}
#: A year: the path changes with the package's version.
CACHE_CONTROL: Final = "public, max-age=31536000, immutable"


def swagger_plugin() -> SwaggerRenderPlugin:
    """Litestar's Swagger page with every URL it loads pointing at this API."""
    return SwaggerRenderPlugin(
        js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
        css_url=f"{ASSETS_PATH}/swagger-ui.css",
        standalone_preset_js_url=f"{ASSETS_PATH}/swagger-ui-standalone-preset.js",
        favicon=f"<link rel='icon' type='image/png' href='{ASSETS_PATH}/favicon-32x32.png'>",
    )


@get("/{name:str}", include_in_schema=False, sync_to_thread=False)
def swagger_asset(name: FromPath[str]) -> File:
    """One of Swagger UI's files; 404 for any other name (no path is ever joined blindly)."""
    media_type = ASSETS.get(name)
    if media_type is None:
        raise NotFoundException(f"no asset {name!r}")
    return File(
        SWAGGER_UI_DIR / name,
        media_type=media_type,
        content_disposition_type="inline",
        headers={"Cache-Control": CACHE_CONTROL},
    )


def docs_assets_router() -> Router:
    """The assets, open to all like the OpenAPI document and the page itself."""
    return Router(path=ASSETS_PATH, route_handlers=[swagger_asset])
