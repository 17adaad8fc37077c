"""The playground's HTML report: the picture and the table of runs in one file."""

from __future__ import annotations

import base64
import html


def html_report(source: str, table, finder, png: bytes) -> str:
    image = base64.b64encode(png).decode("ascii")
    rows = []
    for run in table:
        rate = f"auto → {run.step:.3g}" if run.learning_rate == "auto" else f"{run.step:.3g}"
        status = (
            f"diverged in epoch {run.n_iter + 1}"
            if run.diverged
            else ("converged" if run.converged else "ran all epochs")
        )
        final = "—" if run.diverged else f"{run.final_loss:.6g}"
        cells = [
            run.strategy,
            "" if run.batch_size is None else str(run.batch_size),
            rate,
            str(run.n_iter),
            final,
            f"{1000 * run.fit_time:.1f}",
            status,
        ]
        style = ' class="diverged"' if run.diverged else ""
        rows.append(f"<tr{style}>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    header = "".join(
        f"<th>{name}</th>"
        for name in (
            "strategy",
            "batch",
            "learning rate",
            "epochs",
            "final loss",
            "time (ms)",
            "status",
        )
    )
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
