"""A suite's report: Markdown (report.md), the same content as HTML (index.html), and the
numbers behind it (results.json, NaN written as null).

A Report is a list of sections; a section is a list of blocks (text, table, figure). Both
renderings are made from the blocks, so the HTML never parses Markdown and needs no
network asset: images are PNG files beside the report, linked by relative path.
"""

from __future__ import annotations

import dataclasses
import html
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from infnet.training.tables import markdown_table


@dataclass
class Section:
    title: str
    blocks: list[tuple[str, Any]] = field(default_factory=list)

    def text(self, markdown: str) -> None:
        """Paragraphs and "- " bullet lines; `code` and **bold** inline."""
        self.blocks.append(("text", markdown.strip()))

    def table(self, header: list[str], rows: list[list[str]], caption: str = "") -> None:
        self.blocks.append(("table", (header, rows, caption)))

    def figure(self, path: str | Path, caption: str) -> None:
        self.blocks.append(("figure", (Path(path).resolve(), caption)))


@dataclass
class Report:
    title: str
    sections: list[Section] = field(default_factory=list)

    def section(self, title: str) -> Section:
        s = Section(title)
        self.sections.append(s)
        return s

    def figures(self) -> list[Path]:
        return [b[1][0] for s in self.sections for b in s.blocks if b[0] == "figure"]

    def write(self, out: str | Path, results: dict[str, Any]) -> None:
        """Each file under a temporary name, then renamed: a reader (or a run stopped
        midway) sees a whole previous file or a whole new one, never half of one."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        for name, text in (
            ("results.json", json.dumps(jsonable(results), indent=2, allow_nan=False)),
            ("report.md", self.markdown(out)),
            ("index.html", self.html(out)),
        ):
            tmp = out / f".{name}.{os.getpid()}.tmp"
            tmp.write_text(text)
            os.replace(tmp, out / name)

    # --- renderings -----------------------------------------------------------------------------
    def markdown(self, where: Path) -> str:
        parts = [f"# {self.title}"]
        for s in self.sections:
            parts.append(f"## {s.title}")
            for kind, value in s.blocks:
                if kind == "text":
                    parts.append(value)
                elif kind == "table":
                    header, rows, caption = value
                    parts.append(
                        (f"**{caption}**\n\n" if caption else "") + markdown_table(header, rows)
                    )
                else:
                    path, caption = value
                    parts.append(f"![{caption}]({_rel(path, where)})\n\n*{caption}*")
        return "\n\n".join(parts) + "\n"

    def html(self, where: Path) -> str:
        body = [f"<h1>{html.escape(self.title)}</h1>"]
        for s in self.sections:
            body.append(f"<h2>{html.escape(s.title)}</h2>")
            for kind, value in s.blocks:
                if kind == "text":
                    body.append(_html_text(value))
                elif kind == "table":
                    header, rows, caption = value
                    cap = f"<caption>{_inline(caption)}</caption>" if caption else ""
                    head = "".join(f"<th>{_inline(h)}</th>" for h in header)
                    trs = "".join(
                        "<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>"
                        for r in rows
                    )
                    body.append(
                        f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{trs}</tbody></table>"
                    )
                else:
                    path, caption = value
                    src = html.escape(_rel(path, where), quote=True)
                    body.append(
                        f'<figure><img src="{src}" alt="{html.escape(caption, quote=True)}">'
                        f"<figcaption>{_inline(caption)}</figcaption></figure>"
                    )
        return _PAGE.format(title=html.escape(self.title), body="\n".join(body))


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; }}
table {{ border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }}
th, td {{ border: 1px solid #bbb; padding: 3px 8px; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
caption {{ font-weight: bold; text-align: left; padding: 4px 0; }}
img {{ max-width: 100%; }} figure {{ margin: 1em 0; }} code {{ background: #f3f3f3; }}
</style></head>
<body>
{body}
</body></html>
"""


def _rel(path: Path, where: Path) -> str:
    return Path(os.path.relpath(path, Path(where).resolve())).as_posix()


def _inline(text: str) -> str:
    t = html.escape(str(text))
    t = re.sub(r"`([^`]+)`", r"<code>\1</code>", t)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", t)


def _html_text(markdown: str) -> str:
    out = []
    for para in re.split(r"\n\s*\n", markdown):
        lines = para.strip().splitlines()
        if lines and all(line.startswith("- ") for line in lines):
            out.append(
                "<ul>" + "".join(f"<li>{_inline(line[2:])}</li>" for line in lines) + "</ul>"
            )
        elif lines:
            out.append(f"<p>{_inline(' '.join(lines))}</p>")
    return "\n".join(out)


def jsonable(value: Any) -> Any:
    """Plain JSON types: NaN and infinities become null, numpy scalars and arrays lists,
    dataclasses dicts."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    return value


def fmt(value: float | None, digits: int = 4) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:.{digits}f}"


def fmt_mean_std(mean: float | None, std: float | None, digits: int = 4) -> str:
    """`mean ± std`; std is left out when it is undefined (one seed)."""
    if mean is None or not math.isfinite(mean):
        return "-"
    if std is None or not math.isfinite(std):
        return fmt(mean, digits)
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def fmt_pct(value: float | None, std: float | None = None) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    if std is None or not math.isfinite(std):
        return f"{100 * value:+.2f}%"
    return f"{100 * value:+.2f}% ± {100 * std:.2f}"


def fmt_p(p: float | None) -> str:
    if p is None or not math.isfinite(p):
        return "-"
    return f"{p:.2e}" if p < 1e-3 else f"{p:.3f}"
