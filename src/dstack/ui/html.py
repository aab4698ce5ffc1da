"""Pages as plain strings: every value goes through `esc`, the layout is one function."""

from __future__ import annotations

import html
from datetime import datetime
from urllib.parse import quote, urlencode

from dstack.models.job import JobStatus
from dstack.ui.sessions import UiSession

STATIC = "/ui/static"


def esc(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def url(base: str, /, **query: str | None) -> str:
    params = {k: v for k, v in query.items() if v not in (None, "")}
    return base + ("?" + urlencode(params) if params else "")


def seg(value: str) -> str:
    """A value as one URL path segment."""
    return quote(value, safe="")


def when(moment: datetime | None) -> str:
    """A time as `<time>`: UTC in the markup, shown in the browser's zone or in UTC (the
    reader's choice) by app.js, the other one in its tooltip."""
    if moment is None:
        return "-"
    iso = moment.isoformat()
    shown = moment.strftime("%Y-%m-%d %H:%M:%S UTC")
    return f'<time datetime="{esc(iso)}" title="{esc(shown)}">{esc(shown)}</time>'


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def status(value: JobStatus | str, reason: str | None = None) -> str:
    text = str(value)
    badge = f'<span class="status s-{esc(text)}">{esc(text)}</span>'
    if reason and reason not in (text, "done"):
        badge += f' <span class="reason">{esc(reason.replace("_", " "))}</span>'
    return badge


def money(value: float | None) -> str:
    return "-" if value is None else f"${value:,.4f}"


def size(count: int) -> str:
    amount = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if amount < 1024 or unit == "TiB":
            return f"{int(amount)} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{count} B"


def csrf_field(ui: UiSession) -> str:
    return f'<input type="hidden" name="csrf" value="{esc(ui.csrf)}">'


def post_button(ui: UiSession, action: str, label: str, *, confirm: str | None = None) -> str:
    data = f' data-confirm="{esc(confirm)}"' if confirm else ""
    return (
        f'<form method="post" action="{esc(action)}" class="inline"{data}>{csrf_field(ui)}'
        f'<button type="submit">{esc(label)}</button></form>'
    )


_NAV = (("runs", "/", "Runs"), ("tags", "/tags", "Tags"), ("runners", "/runners", "Runners"))


def layout(
    title: str, body: str, *, ui: UiSession | None, nav: str = "", scripts: tuple[str, ...] = ()
) -> str:
    head_csrf = f'<meta name="csrf-token" content="{esc(ui.csrf)}">' if ui else ""
    links = ""
    user = ""
    if ui is not None:
        items = [*_NAV, ("secrets", "/secrets", "Secrets")]
        if ui.principal.repos is None and ui.principal.role.value == "admin":
            items.append(("users", "/users", "Users"))
        links = "".join(
            f'<li><a href="{href}"{" aria-current=page" if key == nav else ""}>{label}</a></li>'
            for key, href, label in items
        )
        user = (
            f'<span class="who">{esc(ui.principal.name)}</span>'
            f'<form method="post" action="/signout" class="inline">{csrf_field(ui)}'
            '<button type="submit">Sign out</button></form>'
        )
    prefs = (
        '<div class="prefs"><label>Time zone <select id="pref-tz">'
        '<option value="local">local</option><option value="utc">UTC</option></select></label>'
        '<label>Theme <select id="pref-theme"><option value="">system</option>'
        '<option value="light">light</option><option value="dark">dark</option></select>'
        "</label></div>"
    )
    script_tags = "".join(
        f'<script src="{STATIC}/{esc(name)}" defer></script>' for name in ("app.js", *scripts)
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">{head_csrf}
<title>{esc(title)} · dstack</title>
<link rel="stylesheet" href="{STATIC}/app.css">
<script src="{STATIC}/theme.js"></script>{script_tags}
</head><body>
<a class="skip" href="#main">Skip to content</a>
<header><a class="brand" href="/">dstack</a>
<nav aria-label="Main"><ul>{links}</ul></nav><div class="user">{prefs}{user}</div></header>
<main id="main" tabindex="-1">{body}</main>
</body></html>"""


def error_page(code: int, message: str, hint: str | None, ui: UiSession | None) -> str:
    hint_html = f'<p class="hint">{esc(hint)}</p>' if hint else ""
    body = f'<h1>{code}</h1><p class="error" role="alert">{esc(message)}</p>{hint_html}'
    return layout(f"{code}", body, ui=ui)
