"""Serve the ipywidgets embedding scripts and MathJax from the book itself when they are available.

By default myst-nb loads RequireJS and the ipywidgets HTML manager, and Sphinx loads MathJax, from public
CDNs, so a built page shows its widgets and equations only when the reader is online. `.ci/book` fetches
them from the npm registry into ``book/_static/vendor/`` (ignored by git); when they are there, this
extension makes the pages load them from ``_static/vendor/`` instead, so the widgets' saved views and the
equations render offline too (the browser test checks it). Without them the CDN defaults stay: the build
never depends on them.
"""
from __future__ import annotations

from pathlib import Path

VENDOR = Path(__file__).resolve().parent.parent / "_static" / "vendor"
SCRIPTS = ("require.js", "embed-amd.js")
MATHJAX = "mathjax/tex-mml-chtml.js"
WIDGETS_CDN = "https://cdn.jsdelivr.net/npm/"


def vendored() -> bool:
    return all((VENDOR / name).is_file() for name in SCRIPTS)


def _use_vendored(app, config) -> None:
    has_mathjax, has_widgets = (VENDOR / MATHJAX).is_file(), vendored()
    if not (has_mathjax or has_widgets):
        return
    static = str(VENDOR.parent)
    paths = list(config.html_static_path or [])
    if not any(Path(p).resolve() == VENDOR.parent for p in paths if Path(p).exists()):
        paths.append(static)
    config.html_static_path = paths
    if has_mathjax:
        config.mathjax_path = "vendor/" + MATHJAX
    if has_widgets:
        config.nb_ipywidgets_js = {
            "vendor/require.js": {},
            "vendor/embed-amd.js": {"data-jupyter-widgets-cdn": WIDGETS_CDN},
        }


def setup(app):
    app.connect("config-inited", _use_vendored)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "1"}
