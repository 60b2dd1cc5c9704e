"""Sparse 3D convolution with torchsparse's vocabulary.

`select_backend("auto" | "torch" | "torchsparse" | "spconv")` returns a Backend record (SparseTensor,
Conv3d, BatchNorm, ReLU, cat, sparse_collate) that networks are built from; the pure-PyTorch
names are also importable directly from here (`from train.sparse import SparseTensor, nn`).
"""

from train.sparse import nn
from train.sparse.backend import TORCH, Backend, select_backend
from train.sparse.nn import cat
from train.sparse.quantize import sparse_collate, sparse_quantize
from train.sparse.tensor import SparseTensor

__all__ = ["TORCH", "Backend", "SparseTensor", "cat", "nn", "select_backend", "sparse_collate", "sparse_quantize"]
