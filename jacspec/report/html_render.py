"""The page of an HTML report: its model (:class:`Section` with :class:`Table` objects and
PNG figures), the cell and settings formatting and the HTML/CSS templating
(:func:`render_html`). Nothing here reads a result: :mod:`jacspec.report.html_sections` turns
results into sections, :func:`jacspec.report.html.write_report` writes the page.

Every table cell shows its number with 4 significant digits and carries the exact value
(``repr`` of the float) in ``data-value``, with ``data-row``/``data-key`` naming the row and
the column.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import importlib.metadata
import io
import math
import platform
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FIGURE_DPI", "MAX_ROWS", "Section", "Table", "figure_png", "png_size",
           "render_html", "versions"]

#: Rows shown of a long table (the rest is counted under it).
MAX_ROWS = 500
FIGURE_DPI = 100


@dataclass
class Table:
    """A table of the page: ``frame``'s index names the rows (``data-row``), its columns the
    quantities (``data-key``); ``transpose`` shows quantities as rows (None: when there are
    more columns than rows)."""

    caption: str
    frame: Any
    name: str = "table"
    transpose: bool | None = None
    note: str = ""


@dataclass
class Section:
    """One result on the page: settings, tables, figures (``(caption, PNG bytes)``), warnings
    and notes. Build one by hand to add anything to a report."""

    title: str
    kind: str = "result"
    settings: dict[str, Any] = field(default_factory=dict)
    tables: list[Table] = field(default_factory=list)
    figures: list[tuple[str, bytes]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add_figure(self, caption: str, figure: Any, *, dpi: int = FIGURE_DPI) -> None:
        """Append a matplotlib Figure (rendered to PNG now) or PNG bytes."""
        self.figures.append((caption, figure if isinstance(figure, bytes)
                             else figure_png(figure, dpi=dpi)))


# --- small helpers ----------------------------------------------------------------------


def figure_png(fig: Any, *, dpi: int = FIGURE_DPI) -> bytes:
    """The PNG bytes of a matplotlib Figure."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    return buf.getvalue()


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) in pixels from a PNG's IHDR chunk."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise ValueError("figure bytes are not a PNG image")
    return struct.unpack(">II", data[16:24])


def versions() -> dict[str, str]:
    """Versions of jacspec, torch, numpy, pandas, matplotlib and Python writing the page
    (read from the installed distributions: nothing is imported for it)."""
    from jacspec import __version__

    out = {"jacspec": __version__}
    for dist in ("torch", "numpy", "pandas", "matplotlib"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    out["python"] = platform.python_version()
    return out


def is_number(v: Any) -> bool:
    """True for a real number (a numpy scalar included; a bool not)."""
    import numpy as np

    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(
        v, (bool, np.bool_))


def _cell(value: Any) -> tuple[str, str | None]:
    """(text, exact value or None) of one cell: numbers with 4 significant digits and their
    exact ``repr``; None and NaN as ``nan``; lists and dicts summarised."""
    import numpy as np

    if value is None:
        return "nan", "nan"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value)), None
    if isinstance(value, (int, np.integer)):
        return str(int(value)), str(int(value))
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return f"{v:.4g}", repr(v)
    if isinstance(value, Mapping):
        parts = [f"{k}={_cell(v)[0]}" for k, v in value.items()
                 if not isinstance(v, (Mapping, list, tuple, np.ndarray))]
        return ", ".join(parts[:8]) + (", ..." if len(parts) > 8 else ""), None
    if isinstance(value, (list, tuple, np.ndarray)):
        items = list(value)
        if len(items) <= 6 and all(is_number(v) or isinstance(v, str) for v in items):
            return ", ".join(_cell(v)[0] for v in items), None
        return f"[{len(items)} values]", None
    try:
        import pandas as pd

        if pd.isna(value):
            return "nan", "nan"
    except (TypeError, ValueError):
        pass
    return str(value), None


def scalars(d: Mapping[str, Any], skip: Sequence[str] = ()) -> dict[str, Any]:
    """The entries of ``d`` that are not lists or dicts (nor in ``skip``)."""
    import numpy as np

    return {k: v for k, v in d.items() if k not in skip
            and not isinstance(v, (Mapping, list, tuple, np.ndarray))}


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def frame_of(records: Any, index: str | None = None) -> Any:
    """A DataFrame of ``records`` (indexed by ``index`` when it is a column)."""
    import pandas as pd

    frame = pd.DataFrame(records)
    if index is not None and index in frame:
        frame = frame.set_index(index)
    return frame


def warnings_of(frame: Any) -> list[str]:
    """Row warnings (``warning`` column) and quantities a float32 Jacobian left unresolved
    (``unresolved`` column, named unless the row's warning already says so) of a table, one
    sentence per row."""
    cols = getattr(frame, "columns", ())
    if "warning" not in cols and "unresolved" not in cols:
        return []

    def text(value: Any) -> str:
        t = value.strip() if isinstance(value, str) else ""
        return "" if t.lower() in ("none", "nan", "ok") else t

    out = []
    for row in frame.index:
        warning = text(frame.at[row, "warning"]) if "warning" in cols else ""
        unresolved = text(frame.at[row, "unresolved"]) if "unresolved" in cols else ""
        parts = [warning] if warning else []
        if unresolved and "resolve" not in warning:
            parts.append(f"float32 could not resolve {unresolved}")
        if unresolved:
            parts.append("rerun with dtype=torch.float64 (--dtype float64) to resolve it")
        if parts:
            out.append(f"{row}: " + "; ".join(parts))
    return out


def explicit_warnings(d: Mapping[str, Any]) -> list[str]:
    """Entries named ``warning``/``warnings`` anywhere in a (settings) mapping."""
    out: list[str] = []
    for k, v in d.items():
        if k in ("warning", "warnings"):
            if isinstance(v, str) and v.strip():
                out.append(v.strip())
            elif isinstance(v, (list, tuple)):
                out.extend(str(x) for x in v if str(x).strip())
        elif isinstance(v, Mapping):
            out.extend(explicit_warnings(v))
    return out



# --- rendering --------------------------------------------------------------------------

_CSS = """
:root { --fg: #1d2330; --muted: #5b6475; --line: #d9dde5; --accent: #2f5fb3;
        --warn-bg: #fff6e0; --warn-line: #e0a800; --head: #eef2f8; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: #fff;
       font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans",
             "Liberation Sans", Arial, sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 60px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 21px; margin: 36px 0 10px; padding-top: 14px;
     border-top: 3px solid var(--accent); }
h3 { font-size: 16px; margin: 20px 0 6px; }
.meta { color: var(--muted); margin: 0 0 14px; }
.kind { display: inline-block; font-size: 12px; font-weight: 600; color: #fff;
        background: var(--accent); border-radius: 10px; padding: 1px 9px; margin-left: 8px;
        vertical-align: middle; text-transform: uppercase; letter-spacing: .04em; }
nav ol { margin: 6px 0 0 18px; padding: 0; }
nav a { color: var(--accent); text-decoration: none; }
.scroll { overflow-x: auto; max-width: 100%; }
.tall { max-height: 560px; overflow-y: auto; }
table { border-collapse: collapse; margin: 4px 0 8px; font-size: 13.5px; }
th, td { border: 1px solid var(--line); padding: 3px 9px; text-align: left;
         vertical-align: top; }
thead th { background: var(--head); position: sticky; top: 0; }
tbody th { background: #f7f9fc; font-weight: 600; white-space: nowrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap;
         font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace;
         font-size: 12.5px; }
table.settings td { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, monospace;
                    font-size: 12.5px; word-break: break-word; max-width: 760px; }
.warnings { background: var(--warn-bg); border-left: 5px solid var(--warn-line);
            padding: 8px 14px; margin: 10px 0; }
.warnings h3 { margin: 2px 0 4px; }
.warnings ul { margin: 0; padding-left: 20px; }
.note { color: var(--muted); font-style: italic; }
.figures { display: grid; grid-template-columns: repeat(auto-fill, minmax(460px, 1fr));
           gap: 16px; align-items: start; }
figure { margin: 0; padding: 8px; border: 1px solid var(--line); border-radius: 6px;
         background: #fff; min-width: 0; }
figure.wide { grid-column: 1 / -1; }
figure img { display: block; width: 100%; max-width: 100%; height: auto; margin: 0 auto; }
figure.wide img { width: auto; }
figcaption { color: var(--muted); font-size: 13px; margin-top: 4px; }
.cols { display: flex; flex-wrap: wrap; gap: 10px 32px; align-items: flex-start; }
.cols > div { min-width: 0; max-width: 100%; }
footer { color: var(--muted); font-size: 12.5px; margin-top: 40px;
         border-top: 1px solid var(--line); padding-top: 8px; }
"""

#: Marks the page loaded and counts the figures the browser decoded (for checks in a
#: browser; the page does not need it to display).
_SCRIPT = """
window.addEventListener("load", function () {
  var imgs = document.images, ok = 0;
  for (var i = 0; i < imgs.length; i++) {
    if (imgs[i].complete && imgs[i].naturalWidth > 0) { ok += 1; }
  }
  document.body.dataset.images = String(imgs.length);
  document.body.dataset.imagesOk = String(ok);
  document.body.dataset.loaded = "1";
});
"""


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _td(row: Any, key: Any, value: Any) -> str:
    text, exact = _cell(value)
    attrs = f' data-row="{_e(row)}" data-key="{_e(key)}"'
    if exact is not None:
        return f'<td class="num"{attrs} data-value="{_e(exact)}" title="{_e(exact)}">' \
               f"{_e(text)}</td>"
    return f"<td{attrs}>{_e(text)}</td>"


def _render_table(t: Table) -> str:
    frame = t.frame
    rows = list(frame.index)
    cols = [c for c in frame.columns]
    more = ""
    if len(rows) > MAX_ROWS:
        more = f'<p class="note">{len(rows) - MAX_ROWS} more rows not shown.</p>'
        rows = rows[:MAX_ROWS]
    transpose = t.transpose if t.transpose is not None else len(cols) > len(rows)
    values = frame.to_dict(orient="index") if frame.index.is_unique else None

    def get(r_pos: int, r: Any, c: Any) -> Any:
        if values is not None:
            return values[r][c]
        return frame.iloc[r_pos][c]

    name = frame.index.name or ""

    def one(columns: Sequence[Any]) -> str:
        out = [f'<table class="data" data-table="{_e(t.name)}">']
        if transpose:
            out.append("<thead><tr><th>quantity</th>"
                       + "".join(f"<th>{_e(r)}</th>" for r in rows) + "</tr></thead><tbody>")
            for c in columns:
                out.append(f"<tr><th>{_e(c)}</th>" + "".join(
                    _td(r, c, get(i, r, c)) for i, r in enumerate(rows)) + "</tr>")
        else:
            out.append(f"<thead><tr><th>{_e(name)}</th>"
                       + "".join(f"<th>{_e(c)}</th>" for c in columns) + "</tr></thead><tbody>")
            for i, r in enumerate(rows):
                out.append(f"<tr><th>{_e(r)}</th>"
                           + "".join(_td(r, c, get(i, r, c)) for c in columns) + "</tr>")
        out.append("</tbody></table>")
        return "".join(out)

    # a narrow transposed table (one or two results, many quantities) in side-by-side parts
    parts = 1
    if transpose and len(rows) <= 2 and len(cols) > 16:
        parts = min(3 if len(rows) == 1 else 2, math.ceil(len(cols) / 12))
    per = math.ceil(len(cols) / parts) if cols else 1
    chunks = [cols[i:i + per] for i in range(0, len(cols), per)] or [[]]
    body = "".join(one(c) for c in chunks)
    if len(chunks) > 1:
        body = f'<div class="cols">{body}</div>'
    tall = " tall" if not transpose and len(rows) > 60 else ""
    note = f'<p class="note">{_e(t.note)}</p>' if t.note else ""
    return (f"<h3>{_e(t.caption)}</h3>{note}<div class=\"scroll{tall}\">"
            + body + "</div>" + more)


def _render_settings(settings: Mapping[str, Any], name: str = "settings") -> str:
    """Key/value tables of the (flattened) settings, in up to three columns when long."""
    flat = _flatten(settings)
    if not flat:
        return ""
    rows = []
    for k, v in flat.items():
        if isinstance(v, (list, tuple)) and len(v) > 12:
            text, exact = f"[{len(v)} values]", None
        elif isinstance(v, (list, tuple)):
            text, exact = ", ".join(_cell(x)[0] for x in v) or "[]", None
        elif isinstance(v, str):
            text, exact = v, None
        elif v is None:
            text, exact = "none", None
        elif isinstance(v, Mapping):
            text, exact = "{}", None
        else:
            text, exact = _cell(v)
        attr = (f' class="num" data-value="{_e(exact)}"' if exact is not None else "")
        rows.append(f'<tr><th>{_e(k)}</th><td data-key="{_e(k)}"{attr}>{_e(text)}</td></tr>')
    ncols = 1 if len(rows) <= 16 else 2 if len(rows) <= 48 else 3
    per = math.ceil(len(rows) / ncols)
    tables = [f'<table class="settings" data-table="{_e(name)}"><tbody>'
              + "".join(rows[i:i + per]) + "</tbody></table>" for i in range(0, len(rows), per)]
    return '<div class="cols">' + "".join(tables) + "</div>"


def _render_section(sec: Section, anchor: str) -> str:
    parts = [f'<section id="{anchor}" data-kind="{_e(sec.kind)}">',
             f'<h2>{_e(sec.title)}<span class="kind">{_e(sec.kind)}</span></h2>']
    if sec.warnings:
        items = "".join(f"<li>{_e(w)}</li>" for w in dict.fromkeys(sec.warnings))
        parts.append(f'<div class="warnings" data-warnings="{len(set(sec.warnings))}">'
                     f"<h3>Warnings</h3><ul>{items}</ul></div>")
    for note in sec.notes:
        parts.append(f'<p class="note">{_e(note)}</p>')
    settings = _render_settings(sec.settings)
    blocks = [_render_table(t) for t in sec.tables]
    if settings and len(_flatten(sec.settings)) > 16:
        parts.append("<h3>Settings</h3>" + settings)
    elif settings:
        blocks.insert(0, "<h3>Settings</h3>" + settings)
    parts.append('<div class="cols">' + "".join(f"<div>{b}</div>" for b in blocks) + "</div>")
    if sec.figures:
        parts.append('<h3>Figures</h3><div class="figures">')
        for caption, png in sec.figures:
            w, h = png_size(png)
            data = base64.b64encode(png).decode("ascii")
            wide = ' class="wide"' if w > 760 else ""
            parts.append(f'<figure{wide}><img src="data:image/png;base64,{data}" width="{w}" '
                         f'height="{h}" alt="{_e(caption)}"><figcaption>{_e(caption)}'
                         "</figcaption></figure>")
        parts.append("</div>")
    parts.append("</section>")
    return "\n".join(parts)


def render_html(sections: Sequence[Section], *, title: str = "jacspec report") -> str:
    """The page of ``sections`` as one HTML string (no external resource)."""
    stamp = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z").strip()
    vers = versions()
    head = (f'<p class="meta">Written {_e(stamp)} by jacspec {_e(vers["jacspec"])}; '
            f"{len(sections)} result{'s' if len(sections) != 1 else ''}. Numbers show 4 "
            "significant digits; hover a number for its exact value.</p>")
    vtable = _render_settings(vers, "versions")
    nav = ""
    if len(sections) > 1:
        nav = ("<nav><h3>Contents</h3><ol>" + "".join(
            f'<li><a href="#s{i}">{_e(s.title)}</a> ({_e(s.kind)})</li>'
            for i, s in enumerate(sections, 1)) + "</ol></nav>")
    total_warnings = sum(len(set(s.warnings)) for s in sections)
    summary = (f'<p class="meta">{total_warnings} warning{"s" if total_warnings != 1 else ""}'
               " in all (shown in each section).</p>" if total_warnings else "")
    body = "\n".join(_render_section(s, f"s{i}") for i, s in enumerate(sections, 1))
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<meta name=\"generator\" content=\"jacspec {_e(vers['jacspec'])}\">\n"
        f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n"
        f"<body data-loaded=\"0\">\n<main>\n<h1>{_e(title)}</h1>\n{head}\n{summary}\n"
        f"<div class=\"cols\"><div><h3>Versions</h3>{vtable}</div>"
        f"{'<div>' + nav + '</div>' if nav else ''}</div>\n{body}\n"
        "<footer>Self-contained page written by jacspec.report.html.write_report: figures "
        "are embedded PNG images; nothing is loaded from the network.</footer>\n</main>\n"
        f"<script>{_SCRIPT}</script>\n</body>\n</html>\n"
    )

