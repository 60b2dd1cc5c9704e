"""Running a trained model on new scans: `load_model`, `python -m train predict` and `query`."""
