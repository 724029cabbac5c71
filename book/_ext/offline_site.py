"""Sphinx tweaks that keep the course website self-contained.

* Jupyter Book 1 registers sphinx-thebe's configuration script twice, which
  makes browsers log "Identifier 'THEBE_JS_URL' has already been declared" on
  every page; each page here gets every script once.
"""
from __future__ import annotations


def _script_key(script) -> tuple:
    """Inline scripts are the same script if their bodies are; files if their names are.

    (An inline script's file name is sometimes None and sometimes "", so it is ignored.)
    """
    attributes = dict(getattr(script, "attributes", {}) or {})
    filename = getattr(script, "filename", script)
    if "body" in attributes:
        filename = ""
    return (str(filename or ""), tuple(sorted((k, str(v)) for k, v in attributes.items())))


def deduplicate_scripts(app, pagename, templatename, context, doctree) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return
    seen: set = set()
    unique = []
    for script in scripts:
        key = _script_key(script)
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def setup(app):
    # Run after every other handler, so that scripts they add are seen too.
    app.connect("html-page-context", deduplicate_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
