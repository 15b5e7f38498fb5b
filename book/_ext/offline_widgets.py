"""Serve the ipywidgets embedding scripts from the book itself when they are available.

By default myst-nb loads RequireJS and the ipywidgets HTML manager from public CDNs, so a built page shows
its widgets only when the reader is online. `.ci/book` fetches both scripts from the npm registry into
``book/_static/vendor/`` (ignored by git); when they are there, this extension makes every page with
widgets load them from ``_static/vendor/`` instead, so the widgets' saved views render offline too
(this is what the browser test checks). Without them, the CDN defaults stay: the build never depends on it.
"""
from __future__ import annotations

from pathlib import Path

VENDOR = Path(__file__).resolve().parent.parent / "_static" / "vendor"
SCRIPTS = ("require.js", "embed-amd.js")
WIDGETS_CDN = "https://cdn.jsdelivr.net/npm/"


def vendored() -> bool:
    return all((VENDOR / name).is_file() for name in SCRIPTS)


def _use_vendored(app, config) -> None:
    if not vendored():
        return
    static = str(VENDOR.parent)
    paths = list(config.html_static_path or [])
    if static not in paths and not any(Path(p).resolve() == VENDOR.parent for p in paths if Path(p).exists()):
        paths.append(static)
    config.html_static_path = paths
    config.nb_ipywidgets_js = {
        "vendor/require.js": {},
        "vendor/embed-amd.js": {"data-jupyter-widgets-cdn": WIDGETS_CDN},
    }


def setup(app):
    app.connect("config-inited", _use_vendored)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "1"}
