"""The playground's HTML report: the picture and the table of runs in one file."""

from __future__ import annotations

import base64
import html


def html_report(source: str, table, finder, png: bytes) -> str:
    image = base64.b64encode(png).decode("ascii")
    rows = []
    for run in table:
        style = ' class="diverged"' if run.diverged else ""
        cells = "".join(f"<td>{html.escape(cell)}</td>" for cell in run.cells())
        rows.append(f"<tr{style}>{cells}</tr>")
    header = "".join(f"<th>{html.escape(name)}</th>" for name in table.COLUMNS)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>fastgd playground</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}} tr.diverged{{color:#b00}}
img{{max-width:100%}}</style></head><body>
<h1>fastgd playground</h1>
<p>{html.escape(source)}</p>
<img alt="loss curves, learning-rate finder and loss surface" src="data:image/png;base64,{image}">
<h2>Runs</h2>
<table><tr>{header}</tr>
{chr(10).join(rows)}
</table>
<h2>Learning-rate finder</h2>
<p>{html.escape(str(finder))}</p>
</body></html>
"""
