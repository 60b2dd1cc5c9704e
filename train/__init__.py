"""The trainer; `from train import load_model` runs a checkpoint on new scans (train/inference/)."""


def __getattr__(name: str):
    # Lazy, so `python -m train` and its light subcommands do not import torch and the network.
    if name == "load_model":
        from train.inference.model import load_model

        return load_model
    raise AttributeError(f"module 'train' has no attribute {name!r}")
