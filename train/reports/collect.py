"""`python -m train report`: one markdown report of every table and figure under reports/.

It only gathers what the experiment, evaluation and preprocessing report commands wrote, each
with the labeler it used and the command that reproduces it, so every number in the report
comes from a file the code produced.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from shared.errors import UserError
from train.reports.curves import CURVES

# Block order follows the seed paper; a folder's kind is read from the files it holds.
ORDER = ("budget", "compare", "threshold", "partition", "components", "label_quality", "cost", "figures")
START, END = "<!-- results:start -->", "<!-- results:end -->"


def _rank(folder: Path) -> int:
    return next((i for i, key in enumerate(ORDER) if folder.name.endswith(key)), len(ORDER))


def epochs_phrase(epochs: int, runs: list[dict]) -> str:
    """"120 epochs per model", naming the runs whose overrides train longer or shorter (a doubled
    schedule beside the budget), so a table's header never claims one schedule for every row."""
    other = [f"{r['name']}: {r['epochs']}" for r in runs if r.get("epochs", epochs) != epochs]
    return f"{epochs} epochs per model" + (f" ({', '.join(other)})" if other else "")


def _image(png: Path, root: Path) -> str:
    return f"![{png.parent.name}/{png.stem}]({png.relative_to(root).as_posix()})"


def _experiment(folder: Path, root: Path) -> list[str]:
    info = json.loads((folder / "experiment.json").read_text())
    seeds = info.get("seeds", [0])
    schedule = epochs_phrase(info["epochs"], info["runs"])
    lines = [f"Reproduce: `{info['command']}` (labeler: **{info['labeler']}**, {schedule}, "
             f"{len(seeds)} seed{'s' if len(seeds) > 1 else ''} each)", "", (folder / "table.md").read_text().strip(), ""]
    lines += [f"- `{r['name']}`: overrides `{r['set']}`, trained in {r['train_seconds']} s per seed"
              + (f" ({r['steps']} steps)" if "steps" in r else "")
              + (f"; mIoU per seed {r['mIoU_seeds']}" if len(r.get("mIoU_seeds", [])) > 1 else "") for r in info["runs"]]
    if (folder / CURVES).is_file():
        lines += ["", _image(folder / CURVES, root)]
    if folder.name.endswith("compare"):  # qualitative comparison (seed Figs. 3 and 4): one scene per model
        renders = [next(iter(sorted((folder / r["name"]).glob("**/render/*.png"))), None) for r in info["runs"]]
        lines += [""] + [_image(png, root) for png in renders if png is not None]
    return lines


def _block(folder: Path, root: Path) -> list[str] | None:
    if (folder / "experiment.json").exists():
        return _experiment(folder, root)
    texts = [md.read_text().strip() for md in sorted(folder.glob("*.md"))]
    images = [_image(png, root) for png in sorted(folder.glob("*.png"))]
    return texts + images if texts or images else None


def write_report_md(reports: str | Path = "reports") -> Path:
    """Write `<reports>/REPORT.md` from every folder of `reports` and return its path."""
    root = Path(reports)
    if not root.is_dir():
        raise UserError(f"{root}: no reports yet; run `make compare` (or another experiment) first")
    text = ["# Results", "", "Every number below was written by the code; each block names its pipeline and labeler.", ""]
    for folder in sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: (_rank(p), p.name)):
        block = _block(folder, root)
        if block:
            text += [f"## {folder.name}", "", *block, ""]
    if len(text) == 4:
        raise UserError(f"{root}: holds no tables or figures yet")
    out = root / "REPORT.md"
    out.write_text("\n".join(text))
    return out


def splice_into_readme(report: Path, readme: str | Path) -> Path:
    """Put the report between the README's results markers (image links re-rooted), so the
    README's numbers are always the ones the code wrote."""
    readme = Path(readme)
    text = readme.read_text()
    if START not in text or END not in text:
        raise UserError(f"{readme}: no {START} ... {END} markers to put the results between")
    body = report.read_text().replace("# Results\n", "", 1).replace("\n## ", "\n### ")
    prefix = Path(os.path.relpath(report.parent, readme.parent)).as_posix()
    body = body.replace("](", f"]({prefix}/")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{START}\n{body.strip()}\n{END}{tail}")
    return readme
