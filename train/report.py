"""`python -m train report`: one markdown report of every table and figure under reports/.

It only gathers what the experiment, evaluation and preprocessing report commands wrote, each
with the labeler it used and the command that reproduces it, so every number in the report
comes from a file the code produced.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

# Sections in the seed paper's order; any other experiment folder follows under its own name.
SECTIONS = (
    ("compare", "Main comparison (seed Tables 1 and 2)"),
    ("threshold", "Threshold ablation (seed Table 3)"),
    ("partition", "Consistency-set ablation (seed Table 4)"),
    ("components", "Component ablation"),
    ("label_quality", "Pseudo-label quality before and after refinement"),
    ("cost", "Processing cost (seed Section 5)"),
)


def _section_of(folder: Path) -> tuple[int, str]:
    for i, (suffix, title) in enumerate(SECTIONS):
        if folder.name.endswith(suffix) or (folder / f"{suffix}.md").exists():
            return i, title
    return len(SECTIONS), folder.name


def _experiment_block(folder: Path, root: Path) -> list[str]:
    lines = []
    info = json.loads((folder / "experiment.json").read_text())
    lines.append(f"Reproduce: `{info['command']}` (labeler: **{info['labeler']}**, {info['epochs']} epochs per model)")
    lines.append("")
    lines.append((folder / "table.md").read_text().strip())
    lines.append("")
    for run in info["runs"]:
        lines.append(f"- `{run['name']}`: overrides `{run['set']}`, trained in {run['train_seconds']} s")
    pngs = sorted(folder.glob("*/*.png"))
    if pngs:
        lines.append("")
        for png in pngs:
            lines.append(f"![{png.parent.name} {png.stem}]({png.relative_to(root)})")
    return lines


def write_report_md(reports: str | Path = "reports") -> Path:
    root = Path(reports)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no reports yet; run `make compare` (or another experiment) first")
    blocks: list[tuple[int, str, list[str]]] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        order, title = _section_of(folder)
        if (folder / "experiment.json").exists():
            blocks.append((order, f"{title}: {folder.name}", _experiment_block(folder, root)))
        for md in sorted(folder.glob("*.md")):
            if md.name == "table.md":
                continue
            lines = [md.read_text().strip()]
            lines += [f"![{png.stem}]({png.relative_to(root)})" for png in sorted(folder.glob("*.png"))]
            blocks.append((_section_of(md.parent)[0] if md.stem not in dict(SECTIONS) else
                           [s for s, _ in SECTIONS].index(md.stem), f"{dict(SECTIONS).get(md.stem, md.stem)}: {folder.name}", lines))
    if not blocks:
        raise FileNotFoundError(f"{root}: holds no experiment tables yet")
    out = root / "REPORT.md"
    text = ["# Results", "", "Every number below was written by the code; each block names its pipeline and labeler.", ""]
    for _, title, lines in sorted(blocks, key=lambda b: (b[0], b[1])):
        text += [f"## {title}", "", *lines, ""]
    out.write_text("\n".join(text))
    return out


START, END = "<!-- results:start -->", "<!-- results:end -->"


def splice_into_readme(report: Path, readme: str | Path) -> Path:
    """Put the report between the README's results markers (image links re-rooted), so the
    README's numbers are always the ones the code wrote."""
    readme = Path(readme)
    text = readme.read_text()
    if START not in text or END not in text:
        raise ValueError(f"{readme}: no {START} ... {END} markers to put the results between")
    body = report.read_text().replace("# Results\n", "", 1)
    prefix = Path(os.path.relpath(report.parent, readme.parent)).as_posix()
    body = body.replace("](", f"]({prefix}/")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{START}\n{body.strip()}\n{END}{tail}")
    return readme
