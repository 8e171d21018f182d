"""The OHIF viewer at ``/viewer``: the built app of the npm package ``@ohif/app`` (installed by ``make viewer``
into :data:`OHIF_DIST`, never committed), served by the console under the same sign-in, with myonode's own
``/dicomweb`` as its only data source.

- ``/viewer/app-config.js`` is written here from ``[web]`` for the signed-in account: one DICOMweb data
  source at this origin's ``{root_path}/dicomweb``, the study list on, OHIF's upload offered only to an
  ``operator`` (STOW-RS refuses a viewer's saved segmentation anyway), a saved segmentation written as a
  binary SEG, the images in view prefetched (saving needs them all), no onboarding tour, and a guard that
  keeps SR groups without coordinates from breaking the viewer (:data:`SR_GUARD`). Nothing of OHIF's
  default configuration (its public demo server) is served.
- ``index.html`` is the package's, with the paths it was built for (``/``) moved under ``{root_path}/viewer/``,
  and so is the webpack public path built into its scripts (where chunks, workers and WebAssembly load from);
  every other path the app routes itself (``/viewer/viewer?StudyInstanceUIDs=…``,
  ``/viewer/segmentation?…``) gets that page too; files of the build are served as they are, the
  content-hashed bundles cacheable for good.
- Every answer is cross-origin isolated (``Cross-Origin-Opener-Policy: same-origin``,
  ``Cross-Origin-Embedder-Policy: require-corp``: ``SharedArrayBuffer`` for OHIF's tools that need it, its
  onnxruntime-based ones; everything it loads is of this origin) and carries a
  content security policy of its own: scripts of this origin only (plus the page's two inline scripts by
  hash, WebAssembly compilation, which the image codecs need, and ``eval``, which OHIF's SEG loading
  needs — the console's own pages keep the strict policy), no other origin to connect to.

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
    html = re.sub(r'<link rel="manifest"[^>]*>', "", html)  # fetched without the session cookie; no app install
    html = re.sub(r'(href|src)="/(?!/)', rf'\1="{base}', html)
    hashes = " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'"
                      for s in INLINE_SCRIPT.findall(html))
    return html.encode(), policy(hashes)


PUBLIC_PATH = b'__webpack_require__.p = "/";'
CSS_ROOT_URL = re.compile(rb"url\(/(?!/)")


@lru_cache(maxsize=32)
def moved(name: str, root_path: str) -> bytes | None:
    """A script or style sheet of the build with the root it was built for (``/``: the webpack public path
    scripts load chunks, workers and WebAssembly from; ``url(/…)`` in style sheets) moved to
    ``{root_path}/viewer/``; None for a file that names no such path."""
    data = (OHIF_DIST / name).read_bytes()
    base = f"{root_path}/viewer/".encode()
    if name.endswith(".css"):
        return CSS_ROOT_URL.sub(b"url(" + base, data) if CSS_ROOT_URL.search(data) else None
    if PUBLIC_PATH not in data:
        return None
    return data.replace(PUBLIC_PATH, b'__webpack_require__.p = "' + base + b'";')


def policy(inline_script_hashes: str = "") -> str:
    return ("default-src 'self'; "
            # 'unsafe-eval': OHIF's SEG loading compiles functions at run time (ndarray's cwise, `new Function`)
            f"script-src 'self' 'unsafe-eval' 'wasm-unsafe-eval' {inline_script_hashes}; ".replace("  ", " ") +
            "worker-src 'self' blob:; connect-src 'self'; img-src 'self' data: blob:; "
            "style-src 'self' 'unsafe-inline'; font-src 'self' data:; object-src 'none'; base-uri 'self'; "
            "form-action 'self'; frame-ancestors 'self'")


def isolation_headers(csp: str) -> dict[str, str]:
    return {"Cross-Origin-Opener-Policy": "same-origin", "Cross-Origin-Embedder-Policy": "require-corp",
            "Cross-Origin-Resource-Policy": "same-origin", "Content-Security-Policy": csp,
            "X-Frame-Options": "SAMEORIGIN"}


# OHIF 3.13 reads ``coords[0].ReferencedSOPSequence`` of every SR measurement group it loads, and a group with
# no spatial coordinates throws and blanks the whole viewer. myonode's TID 1500 groups have none by design:
# each is a TID 1411 volumetric ROI that references its SEG segment, and TID 1411 allows no coordinates
# beside a segment (highdicom refuses them) — so OHIF cannot list them, and the console's viewer page shows
# the visit's measurements beside it (pages.visit_viewer). This customization (OHIF's own hook, called just
# before that line) gives such a group an empty reference, which OHIF then skips; groups with coordinates
# (another system's SR) pass unchanged.
SR_GUARD = ("({ measurement }) => (measurement.coords && measurement.coords.length ? measurement "
            ": { ...measurement, coords: [{}] })")


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
            # a saved segmentation as a binary SEG in Explicit VR Little Endian (OHIF's default is a Label Map
            # SEG in RLE): the kind quant/corrected_labels.py reads, as from 3D Slicer
            "segmentation": {"store": {"defaultMode": "bitmap", "transferSyntaxUID": "1.2.840.10008.1.2.1"}},
        },
    }
    config = {
        "routerBasename": f"{root_path}/viewer",
        "extensions": [], "modes": [],
        "customizationService": {"onBeforeSRAddMeasurement": {"$set": "@SR_GUARD@"},
                                 "ohif.tours": {"$set": []}},  # no onboarding tour over the first image
        "showStudyList": True, "maxNumberOfWebWorkers": 2,
        # the images of the series in view are fetched in the background: saving an edited SEG needs every
        # image it references in the viewer's cache, not only those scrolled through
        "studyPrefetcher": {"enabled": True, "displaySetsCount": 1, "maxNumPrefetchRequests": 10,
                            "order": "closest"},
        "showWarningMessageForCrossOrigin": False, "showCPUFallbackMessage": True, "showLoadingIndicator": True,
        "strictZSpacingForVolumeViewport": False,
        "investigationalUseDialog": {"option": "never"},
        "maxNumRequests": {"interaction": 100, "thumbnail": 10, "prefetch": 10},
        "showErrorDetails": "always", "disableConfirmationPrompts": True,  # a SEG opened from a visit is overlaid
        "defaultDataSourceName": DATA_SOURCE,
        "dataSources": [source],
    }
    text = (json.dumps(config, indent=2).replace('"@ROOT@"', "window.location.origin + ROOT")
            .replace('"@SR_GUARD@"', SR_GUARD))
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
        headers = {**isolation_headers(policy()),
                   "Cache-Control": "public, max-age=31536000, immutable" if HASHED.search(target.name) else "no-cache"}
        if target.suffix in (".js", ".css") and (body := moved(relative, _root(request))) is not None:
            return Response(body, media_type="text/css" if target.suffix == ".css" else "text/javascript",
                            headers=headers)
        return FileResponse(target, headers=headers)
    if "." in relative.rsplit("/", 1)[-1]:  # a file the build does not have: not the page in its place
        return PlainTextResponse(f"no {relative} in the viewer", status_code=404)
    page, csp = index_page(_root(request))
    return Response(page, media_type="text/html", headers={**isolation_headers(csp), "Cache-Control": "no-cache"})


ROUTES: list[RouteSpec] = [
    ("/viewer", viewer_root, ["GET"], VIEWER),
    ("/viewer/app-config.js", config_script, ["GET"], VIEWER),
    ("/viewer/{path:path}", viewer_file, ["GET"], VIEWER),
]
