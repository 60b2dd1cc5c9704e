import json

from train.reports.collect import END, START, splice_into_readme, write_report_md


def test_report_gathers_tables_figures_and_splices_into_readme(tmp_path):
    reports = tmp_path / "reports"
    exp = reports / "synthetic-compare"
    (exp / "hicl" / "render").mkdir(parents=True)
    (exp / "table.md").write_text("| Method | mIoU |\n|---|---:|\n| hicl | 42.00 |")
    (exp / "hicl" / "render" / "scene.png").write_bytes(b"png")
    (exp / "learning_curves.png").write_bytes(b"png")
    (exp / "experiment.json").write_text(json.dumps({
        "command": "python -m train experiment x.toml", "labeler": "simulated-clip", "epochs": 3,
        "runs": [{"name": "hicl", "set": {}, "train_seconds": 1.0, "steps": 114},
                 {"name": "hicl-6", "set": {"train.epochs": 6}, "train_seconds": 2.0, "steps": 228, "epochs": 6}]}))
    (reports / "synthetic-cost").mkdir()
    (reports / "synthetic-cost" / "cost.md").write_text("| stage | s |")
    report = write_report_md(reports)
    text = report.read_text()
    assert text.index("synthetic-compare") < text.index("synthetic-cost")  # the seed's order
    assert "| hicl | 42.00 |" in text and "simulated-clip" in text
    assert "3 epochs per model (hicl-6: 6)" in text  # a run with its own schedule is named in the header
    assert "(synthetic-compare/hicl/render/scene.png)" in text and "trained in 1.0 s per seed (114 steps)" in text
    assert "![synthetic-compare/learning_curves](synthetic-compare/learning_curves.png)" in text
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n{START}\nold\n{END}\ntail\n")
    splice_into_readme(report, readme)
    new = readme.read_text()
    assert "old" not in new and "tail" in new and "(reports/synthetic-compare/hicl/render/scene.png)" in new
