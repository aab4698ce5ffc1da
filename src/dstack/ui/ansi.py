"""ANSI output to HTML: SGR colours and styles become `<span class>`s, the text is escaped,
every other control sequence or character is dropped."""

from __future__ import annotations

import html
import re

# CSI sequences (ESC [ ... final), OSC (ESC ] ... BEL/ST), other two-byte escapes.
_ESCAPES = re.compile(r"\x1b\[([0-9;:?]*)([@-~])|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]?")
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_STYLES = {1: "b", 2: "dim", 3: "i", 4: "u"}
_RESET_STYLE = {22: (1, 2), 23: (3,), 24: (4,)}


class _State:
    def __init__(self) -> None:
        self.fg: str | None = None
        self.bg: str | None = None
        self.styles: set[int] = set()

    def classes(self) -> str:
        names = [_STYLES[s] for s in sorted(self.styles)]
        if self.fg:
            names.append(f"fg-{self.fg}")
        if self.bg:
            names.append(f"bg-{self.bg}")
        return " ".join(names)

    def apply(self, params: str) -> None:
        codes = [int(p) if p.isdigit() else 0 for p in params.replace(":", ";").split(";")]
        i = 0
        while i < len(codes):
            code = codes[i]
            if code == 0:
                self.fg, self.bg, self.styles = None, None, set()
            elif code in _STYLES:
                self.styles.add(code)
            elif code in _RESET_STYLE:
                self.styles -= set(_RESET_STYLE[code])
            elif 30 <= code <= 37:
                self.fg = str(code - 30)
            elif 90 <= code <= 97:
                self.fg = str(code - 90 + 8)
            elif code == 39:
                self.fg = None
            elif 40 <= code <= 47:
                self.bg = str(code - 40)
            elif 100 <= code <= 107:
                self.bg = str(code - 100 + 8)
            elif code == 49:
                self.bg = None
            elif code in (38, 48) and i + 1 < len(codes):
                # 256-colour (5;n) keeps n < 16 as a palette class; truecolor is dropped.
                if codes[i + 1] == 5 and i + 2 < len(codes):
                    n = codes[i + 2]
                    if n < 16:
                        setattr(self, "fg" if code == 38 else "bg", str(n))
                    i += 2
                elif codes[i + 1] == 2:
                    i += 4
            i += 1


def to_html(text: str) -> str:
    """`text` (one line, or several) as safe HTML with SGR spans."""
    state = _State()
    out: list[str] = []
    open_span = False
    pos = 0
    for match in _ESCAPES.finditer(text):
        out.append(_text(text[pos : match.start()]))
        pos = match.end()
        if match.group(2) != "m":
            continue  # a CSI other than SGR, an OSC, a lone ESC: dropped
        state.apply(match.group(1) or "0")
        if open_span:
            out.append("</span>")
            open_span = False
        classes = state.classes()
        if classes:
            out.append(f'<span class="{classes}">')
            open_span = True
    out.append(_text(text[pos:]))
    if open_span:
        out.append("</span>")
    return "".join(out)


def _text(chunk: str) -> str:
    return html.escape(_CONTROLS.sub("", chunk.replace("\t", "    ")), quote=False)


def strip(text: str) -> str:
    """`text` without any escape sequence or control character (for search)."""
    return _CONTROLS.sub("", _ESCAPES.sub("", text))
