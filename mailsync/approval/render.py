"""The templates of the mail mailsync writes (rep and manager digests), escaped by file name."""

from __future__ import annotations

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

TEMPLATES = Environment(
    loader=PackageLoader("mailsync.approval", "templates"),
    # Escaped unless the template is plain text: the extension is the last suffix, "j2", so keying on
    # "html" alone left digest.html.j2 unescaped.
    autoescape=select_autoescape(
        enabled_extensions=("html.j2",), disabled_extensions=("txt.j2",), default=True
    ),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
