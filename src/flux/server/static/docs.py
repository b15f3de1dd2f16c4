"""The API docs page at /docs: Swagger UI over /openapi.json, from installed files only.

Swagger UI is not ours: its release files (swagger-ui-bundle.js, swagger-ui.css; Apache-2.0,
licence beside them) come from the pinned `swagger-ui-py` package, which ships the official
dist folder. Only the page, its starter script and a few styles are FLUX's, in docs/ beside
this module. Nothing is fetched from anywhere else at run time, and the browser is told so:
the Content-Security-Policy allows this origin only (plus data: images, which swagger-ui.css
uses for its icons) and no inline script, so a page that tried would be stopped.

Each file is read once, on first request, with its gzip form and an ETag (the SHA-256 of its
bytes): a browser revalidates with If-None-Match and gets 304, and the 1.5 MB bundle goes
over the wire compressed (about 0.4 MB).
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CSP", "DocsFiles", "StaticFile", "swagger_ui_dir"]

HERE = Path(__file__).parent / "docs"

#: What the docs page may load: this origin only. `img-src data:` is for the icons inlined in
#: swagger-ui.css; `connect-src` (from default-src) lets "Try it out" call this server.
CSP = (
    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'"
)

#: The URL name of each asset -> (where it lives: "flux" or "swagger-ui", file, content type)
ASSETS = {
    "swagger-ui-bundle.js": ("swagger-ui", "swagger-ui-bundle.js", "text/javascript"),
    "swagger-ui.css": ("swagger-ui", "swagger-ui.css", "text/css"),
    "swagger-ui-LICENSE.txt": ("swagger-ui", "LICENSE", "text/plain"),
    "flux-docs.js": ("flux", "flux-docs.js", "text/javascript"),
    "flux-docs.css": ("flux", "flux-docs.css", "text/css"),
}
PAGE = ("flux", "index.html", "text/html")


def swagger_ui_dir() -> Path:
    """The folder of Swagger UI's dist files inside the installed `swagger_ui` package.

    Found without importing the package (its __init__ loads Jinja2 and PyYAML for the
    framework handlers FLUX does not use). Raises LookupError if it is not installed.
    """
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise LookupError("swagger-ui-py is not installed (a dependency of flux-mail)")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


@dataclass(frozen=True)
class StaticFile:
    """One file as served: its bytes, gzip form, content type and strong ETag."""

    body: bytes
    gzipped: bytes
    content_type: str
    etag: str

    @classmethod
    def read(cls, path: Path, content_type: str) -> StaticFile:
        body = path.read_bytes()
        # mtime=0: the same bytes on every start, so a restart does not change a response;
        # level 6 is within 0.3 % of 9's size here at two thirds of the time
        gzipped = gzip.compress(body, compresslevel=6, mtime=0)
        return cls(body, gzipped, content_type, f'"{hashlib.sha256(body).hexdigest()[:32]}"')


class DocsFiles:
    """The page and its assets, each read on first use and then kept (they never change
    while the process runs). One per app: no module-level cache."""

    def __init__(self, swagger_dir: Path | None = None) -> None:
        self._dirs = {"flux": HERE, "swagger-ui": swagger_dir or swagger_ui_dir()}
        self._files: dict[str, StaticFile] = {}

    async def page(self) -> StaticFile:
        return await self._get("index.html", PAGE)

    async def asset(self, name: str) -> StaticFile | None:
        """The asset served as /docs/assets/{name}, or None for any other name."""
        where = ASSETS.get(name)
        return None if where is None else await self._get(name, where)

    async def _get(self, name: str, where: tuple[str, str, str]) -> StaticFile:
        if name not in self._files:
            # read and compressed off the event loop: the bundle takes ~50 ms (once)
            source, filename, content_type = where
            path = self._dirs[source] / filename
            self._files[name] = await asyncio.to_thread(StaticFile.read, path, content_type)
        return self._files[name]
