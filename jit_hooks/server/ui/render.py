"""Jinja2 templates (autoescaped) and the filters that show people's text inert."""

from __future__ import annotations

import time
import unicodedata
from functools import cache

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup, escape


def visible(text: object) -> Markup:
    """Escaped text with control and invisible formatting characters shown as [U+XXXX].

    Bidi overrides (U+202E...) and zero-width characters would make the reader
    see something other than what is stored; here they are named instead.
    """
    out = []
    for c in str(text):
        if ord(c) < 32 or unicodedata.category(c) in ("Cc", "Cf"):
            out.append(Markup('<span class="cp">[U+{:04X}]</span>').format(ord(c)))
        else:
            out.append(escape(c))
    return Markup("").join(out)


def when(ts: int | None) -> str:
    if ts is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts))


def duration(seconds: int | None) -> str:
    if seconds is None:
        return "-"
    h, rest = divmod(int(seconds), 3600)
    m, s = divmod(rest, 60)
    parts = [f"{h} h" if h else "", f"{m} min" if m else "", f"{s} s" if s else ""]
    return " ".join(p for p in parts if p) or "0 s"


@cache
def _env() -> Environment:
    env = Environment(
        loader=PackageLoader("jit_hooks.server.ui", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
    )
    env.filters.update(visible=visible, when=when, duration=duration)
    return env


def render(template: str, **values: object) -> str:
    return _env().get_template(template).render(**values)
