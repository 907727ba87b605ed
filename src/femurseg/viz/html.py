"""Self-contained HTML reports: tables and embedded PNG figures in one file that opens anywhere, offline.

Used by the protocol report and the QCT report, so every report of the project looks and reads the same.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["html_table", "html_figure", "html_page", "CSS"]

#: The reports' style sheet.
CSS = ("body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;color:#222}"
       "table{border-collapse:collapse;font-size:13px;margin:.5em 0}td,th{border:1px solid #bbb;padding:3px 6px}"
       "th{background:#eee}tr.em td{font-style:italic;background:#f6f6ff}.note{font-size:12px;color:#555}"
       ".warn{color:#a33}figure{display:inline-block;margin:6px;vertical-align:top;width:47%}"
       "figure.wide{width:97%}figcaption{font-size:12px;color:#444}img{max-width:100%}")


def html_table(title: str, head: Sequence[str], rows: Sequence[Sequence[str]], *, note: str = "",
               emphasise: Callable[[Sequence[str]], bool] | None = None) -> str:
    """An HTML table with a heading and an optional note below; every cell is escaped.

    Parameters
    ----------
    title : str
        Heading (``<h3>``); empty for none.
    head : sequence of str
        Column headers.
    rows : sequence of sequence of str
        Cells, already formatted.
    note : str
        A small-print line under the table.
    emphasise : callable, optional
        Rows for which it returns True are set apart (italic, shaded): reference values beside ours, say.
    """
    e = html.escape
    th = "".join(f"<th>{e(h)}</th>" for h in head)
    body = "".join(("<tr class='em'>" if emphasise is not None and emphasise(r) else "<tr>")
                   + "".join(f"<td>{e(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    heading = f"<h3>{e(title)}</h3>" if title else ""
    small = f"<p class='note'>{e(note)}</p>" if note else ""
    return f"{heading}<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>{small}"


def html_figure(path: str | Path, caption: str, *, wide: bool = False) -> str:
    """A PNG embedded in the page (base64), with its caption."""
    b64 = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    cls = " class='wide'" if wide else ""
    return (f"<figure{cls}><img src='data:image/png;base64,{b64}' alt='{html.escape(caption)}'>"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def html_page(title: str, body: Sequence[str]) -> str:
    """A whole self-contained page: ``<h1>title</h1>`` then the body's HTML fragments."""
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>{''.join(body)}</body></html>\n")
