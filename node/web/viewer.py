"""The OHIF viewer at ``/viewer``: the built app of the npm package ``@ohif/app`` (installed by ``make viewer``
into :data:`OHIF_DIST`, never committed), served by the console under the same sign-in, with myonode's own
``/dicomweb`` as its only data source.

- ``/viewer/app-config.js`` is written here from ``[web]`` for the signed-in account: one DICOMweb data
  source at this origin's ``{root_path}/dicomweb``, the study list on, OHIF's upload and the segmentation
  save only for an ``operator`` (STOW-RS needs that role anyway). Nothing of OHIF's default configuration
  (its public demo server) is served.
- ``index.html`` is the package's, with the paths it was built for (``/``) moved under ``{root_path}/viewer/``;
  every other path the app routes itself (``/viewer/viewer?StudyInstanceUIDs=…``,
  ``/viewer/segmentation?…``) gets that page too; files of the build are served as they are, the
  content-hashed bundles cacheable for good.
- Every answer is cross-origin isolated (``Cross-Origin-Opener-Policy: same-origin``,
  ``Cross-Origin-Embedder-Policy: require-corp``: OHIF's decoders use ``SharedArrayBuffer``) and carries a
  content security policy of its own: scripts of this origin only (plus the page's two inline scripts by
  hash, and WebAssembly compilation, which the image codecs need), no other origin to connect to.

When the package is not installed, ``/viewer`` says how to install it (``make viewer``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from functools import lru_cache
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, RedirectResponse, Response

from node.web.access import Access, RouteSpec, web_context
from storage import models as m

OHIF_DIST = Path(__file__).parent / "ohif" / "dist"
VIEWER = Access(role=m.Role.VIEWER)
DATA_SOURCE = "myonode"
HASHED = re.compile(r"\.[0-9a-f]{16}\.(js|wasm)$|^[0-9a-f]{16}\.(wasm|woff2)$")
INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.S)


def installed() -> bool:
    return (OHIF_DIST / "index.html").is_file()


@lru_cache(maxsize=4)
def index_page(root_path: str) -> tuple[bytes, str]:
    """The package's ``index.html`` with its absolute paths under ``{root_path}/viewer/``, and the content
    security policy that lets exactly its inline scripts run."""
    base = f"{root_path}/viewer/"
    html = (OHIF_DIST / "index.html").read_text(encoding="utf-8")
    html = html.replace('window.PUBLIC_URL="/"', f'window.PUBLIC_URL="{base}"')
    html = re.sub(r'(href|src)="/(?!/)', rf'\1="{base}', html)
    hashes = " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'"
                      for s in INLINE_SCRIPT.findall(html))
    return html.encode(), policy(hashes)


def policy(inline_script_hashes: str = "") -> str:
    return ("default-src 'self'; "
            f"script-src 'self' 'wasm-unsafe-eval' {inline_script_hashes}; ".replace("  ", " ") +
            "worker-src 'self' blob:; connect-src 'self'; img-src 'self' data: blob:; "
            "style-src 'self' 'unsafe-inline'; font-src 'self' data:; object-src 'none'; base-uri 'self'; "
            "form-action 'self'; frame-ancestors 'self'")


def isolation_headers(csp: str) -> dict[str, str]:
    return {"Cross-Origin-Opener-Policy": "same-origin", "Cross-Origin-Embedder-Policy": "require-corp",
            "Cross-Origin-Resource-Policy": "same-origin", "Content-Security-Policy": csp,
            "X-Frame-Options": "SAMEORIGIN"}


def app_config(*, root_path: str, may_store: bool) -> str:
    """OHIF's ``window.config``: myonode's DICOMweb as the one data source (see the module docstring)."""
    source = {
        "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
        "sourceName": DATA_SOURCE,
        "configuration": {
            "friendlyName": "myonode", "name": DATA_SOURCE,
            "qidoRoot": "@ROOT@", "wadoRoot": "@ROOT@", "wadoUriRoot": "@ROOT@",
            "qidoSupportsIncludeField": True, "imageRendering": "wadors", "thumbnailRendering": "wadors",
            "enableStudyLazyLoad": True, "supportsFuzzyMatching": False, "supportsWildcard": True,
            "staticWado": False, "singlepart": "bulkdata,video",
            "bulkDataURI": {"enabled": True, "relativeResolution": "studies"},
            "omitQuotationForMultipartRequest": True,
            "supportsStow": may_store, "dicomUploadEnabled": may_store,
        },
    }
    config = {
        "routerBasename": f"{root_path}/viewer",
        "extensions": [], "modes": [], "customizationService": {},
        "showStudyList": True, "maxNumberOfWebWorkers": 2,
        "showWarningMessageForCrossOrigin": False, "showCPUFallbackMessage": True, "showLoadingIndicator": True,
        "strictZSpacingForVolumeViewport": False,
        "investigationalUseDialog": {"option": "never"},
        "maxNumRequests": {"interaction": 100, "thumbnail": 10, "prefetch": 10},
        "showErrorDetails": "always",
        "defaultDataSourceName": DATA_SOURCE,
        "dataSources": [source],
    }
    text = json.dumps(config, indent=2).replace('"@ROOT@"', "window.location.origin + ROOT")
    return (f"// written by myonode (node/web/viewer.py) from [web]: myonode's DICOMweb is the only data source\n"
            f"const ROOT = {json.dumps(root_path + '/dicomweb')};\nwindow.config = {text};\n")


def _root(request: Request) -> str:
    return str(request.scope.get("root_path", "") or web_context(request).settings.web.root_path)


async def config_script(request: Request) -> Response:
    user = request.state.user
    body = app_config(root_path=_root(request), may_store=user.role.allows(m.Role.OPERATOR))
    return Response(body, media_type="text/javascript",
                    headers={**isolation_headers(policy()), "Cache-Control": "no-store"})


async def viewer_root(request: Request) -> Response:
    return RedirectResponse(f"{_root(request)}/viewer/", status_code=307)


async def viewer_file(request: Request) -> Response:
    """A file of the build, or the app's page for any path it routes itself."""
    if not installed():
        return PlainTextResponse(f"the OHIF viewer is not installed here ({OHIF_DIST} is missing): "
                                 "`make viewer` installs it", status_code=503)
    relative = request.path_params.get("path", "")
    target = (OHIF_DIST / relative).resolve()
    if relative and target.is_relative_to(OHIF_DIST.resolve()) and target.is_file() and relative != "index.html":
        cache = "public, max-age=31536000, immutable" if HASHED.search(target.name) else "no-cache"
        return FileResponse(target, headers={**isolation_headers(policy()), "Cache-Control": cache})
    if "." in relative.rsplit("/", 1)[-1]:  # a file the build does not have: not the page in its place
        return PlainTextResponse(f"no {relative} in the viewer", status_code=404)
    page, csp = index_page(_root(request))
    return Response(page, media_type="text/html", headers={**isolation_headers(csp), "Cache-Control": "no-cache"})


ROUTES: list[RouteSpec] = [
    ("/viewer", viewer_root, ["GET"], VIEWER),
    ("/viewer/app-config.js", config_script, ["GET"], VIEWER),
    ("/viewer/{path:path}", viewer_file, ["GET"], VIEWER),
]
