"""Entry point: `python -m train fit|eval PIPELINE.toml` (see train/cli.py)."""

from train.cli import main

raise SystemExit(main())
