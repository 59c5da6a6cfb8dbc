"""Files on `--serve`: the event clips and snapshots under the --clips folder (`/clips/{path}`), and the page's
vendored chart library (`/static/{name}`: uPlot, MIT, its LICENSE beside it; nothing comes from a CDN).

`/clips/` serves a file only when its resolved path (symlinks followed) lies inside the resolved --clips folder and
its suffix is one the recorder writes: `..`, absolute paths, encoded separators and links leading out all end
in 404, the same answer as a missing file, so the folder's layout cannot be probed beyond it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from aiohttp import web

STATIC = Path(__file__).with_name("static")
STATIC_TYPES = {"uPlot.iife.min.js": "text/javascript", "uPlot.min.css": "text/css",
                "uPlot.LICENSE": "text/plain"}
CLIP_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".mp4": "video/mp4",
              ".webm": "video/webm"}
MAX_PATH_CHARS = 512
NOSNIFF = {"X-Content-Type-Options": "nosniff"}


def clip_file(folder: Path, name: str) -> Path | None:
    """The file `name` names inside `folder` (already resolved), or None."""
    if not name or len(name) > MAX_PATH_CHARS or "\x00" in name or "\\" in name or name.startswith("/"):
        return None
    try:
        path = (folder / name).resolve(strict=True)
    except (OSError, RuntimeError):  # missing, a link loop
        return None
    if not path.is_relative_to(folder) or path == folder or not path.is_file():
        return None
    return path if path.suffix.lower() in CLIP_TYPES else None


class FileRoutes:
    def __init__(self, clips_dir: Callable[[], Path | None]) -> None:
        self.clips_dir = clips_dir

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/clips/{name:.+}", self.clip)
        app.router.add_get("/static/{name}", self.static)

    async def clip(self, request: web.Request) -> web.StreamResponse:
        folder = self.clips_dir()
        if folder is None:
            raise web.HTTPNotFound(text="no clips: the run was started without --clips\n")
        path = clip_file(folder, request.match_info["name"])
        if path is None:
            raise web.HTTPNotFound(text="no such clip or snapshot\n")
        # FileResponse: ranges (a <video> seeks), conditional requests, the file read off the event loop.
        return web.FileResponse(path, headers={"Content-Type": CLIP_TYPES[path.suffix.lower()],
                                               "Cache-Control": "no-cache", **NOSNIFF})

    async def static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        kind = STATIC_TYPES.get(name)
        if kind is None:
            raise web.HTTPNotFound(text="no such file\n")
        return web.Response(body=(STATIC / name).read_bytes(), content_type=kind, charset="utf-8",
                            headers={"Cache-Control": "max-age=3600", **NOSNIFF})
