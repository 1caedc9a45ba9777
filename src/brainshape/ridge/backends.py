"""Array backends of the ridge engine: numpy on the CPU, torch on a CUDA GPU (or its CPU).

The solver is written once against this small interface. Matrix products and symmetric
eigendecompositions go through ``mm`` and ``eigh`` (so that their work can be counted:
``resources.encode_flops`` is tested against such a count); elementwise work uses the arrays'
own operators.
"""

from __future__ import annotations

import os
import sys

import numpy as np

from brainshape.errors import BrainshapeError


class NumpyBackend:
    """Arrays on the CPU through numpy (and its BLAS/LAPACK)."""

    name = "numpy"

    def __init__(self, dtype: str = "float64"):
        self.dtype = np.dtype(dtype)
        self.device = "cpu"

    @property
    def float64(self) -> bool:
        return self.dtype == np.float64

    @property
    def eps(self) -> float:
        return float(np.finfo(self.dtype).eps)

    def asarray(self, a):
        return np.asarray(a, dtype=self.dtype)

    def as64(self, a):
        """The same values in float64 (on the backend's device)."""
        return np.asarray(a, dtype=np.float64)

    def to_numpy(self, a) -> np.ndarray:
        return np.asarray(a, dtype=np.float64)

    def mm(self, a, b):
        """The matrix product ``a @ b`` (numpy hands ``A @ A.T`` to BLAS ``syrk``)."""
        return a @ b

    def gram(self, A):
        """``A A^T`` through BLAS ``syrk`` (numpy detects the transposed operand): ``n^2 p``
        FLOPs for an (n, p) array, half a general product's."""
        return A @ A.T

    def eigh(self, A):
        return np.linalg.eigh(A)

    def zeros(self, shape, float64: bool = False):
        return np.zeros(shape, dtype=np.float64 if float64 else self.dtype)

    def index(self, idx: np.ndarray):
        return idx

    def colmax(self, A):
        return A.max(axis=0)

    def colmin(self, A):
        return A.min(axis=0)

    def sqrt(self, A):
        return np.sqrt(A)

    def clip_min(self, A, low: float):
        return np.clip(A, low, None)

    def where(self, cond, a, b):
        return np.where(cond, a, b)

    def abs(self, A):
        return np.abs(A)

    def triu(self, A, k: int = 0):
        return np.triu(A, k)

    def diag(self, A):
        return np.diag(A).copy()

    def nonzero(self, mask) -> np.ndarray:
        """Indices (numpy int64) where a boolean backend array is true."""
        return np.flatnonzero(mask)


class TorchBackend:
    """Arrays on a torch device (CUDA when available); the same solver code as numpy."""

    name = "torch"

    def __init__(self, dtype: str = "float32", device: str | None = None):
        import torch

        self.torch = torch
        self.dtype = getattr(torch, str(dtype))
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))

    @property
    def float64(self) -> bool:
        return self.dtype == self.torch.float64

    @property
    def eps(self) -> float:
        return float(self.torch.finfo(self.dtype).eps)

    def asarray(self, a):
        if isinstance(a, self.torch.Tensor):
            return a.to(device=self.device, dtype=self.dtype)
        return self.torch.as_tensor(np.asarray(a), dtype=self.dtype, device=self.device)

    def as64(self, a):
        if isinstance(a, self.torch.Tensor):
            return a.to(device=self.device, dtype=self.torch.float64)
        return self.torch.as_tensor(np.asarray(a), dtype=self.torch.float64, device=self.device)

    def to_numpy(self, a) -> np.ndarray:
        return a.detach().to("cpu", self.torch.float64).numpy()

    def mm(self, a, b):
        return a @ b

    def gram(self, A):
        """``A A^T``: the lower block triangle (:data:`GRAM_BLOCKS` row blocks), mirrored, so
        about half a general product's work as numpy's ``syrk``."""
        n = A.shape[0]
        edges = np.linspace(0, n, min(GRAM_BLOCKS, max(1, n // 256)) + 1).round().astype(int)
        out = self.torch.empty((n, n), dtype=A.dtype, device=A.device)
        for i, (a, b) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
            for c, d in zip(edges[: i + 1], edges[1 : i + 2], strict=True):
                block = A[a:b] @ A[c:d].T
                out[a:b, c:d] = block
                if c != a:
                    out[c:d, a:b] = block.T
        return out

    def eigh(self, A):
        return self.torch.linalg.eigh(A)

    def zeros(self, shape, float64: bool = False):
        dtype = self.torch.float64 if float64 else self.dtype
        return self.torch.zeros(shape, dtype=dtype, device=self.device)

    def index(self, idx: np.ndarray):
        return self.torch.as_tensor(idx, dtype=self.torch.long, device=self.device)

    def colmax(self, A):
        return A.max(dim=0).values

    def colmin(self, A):
        return A.min(dim=0).values

    def sqrt(self, A):
        return self.torch.sqrt(A)

    def clip_min(self, A, low: float):
        return self.torch.clamp(A, min=low)

    def where(self, cond, a, b):
        return self.torch.where(cond, a, b)

    def abs(self, A):
        return A.abs()

    def triu(self, A, k: int = 0):
        return self.torch.triu(A, k)

    def diag(self, A):
        return A.diagonal().clone()

    def nonzero(self, mask) -> np.ndarray:
        return self.torch.nonzero(mask).flatten().cpu().numpy()


#: Row blocks of the lower-triangle Gram product on torch.
GRAM_BLOCKS = 16

BACKENDS = ("auto", "numpy", "torch")

#: Device files of a GPU driver (NVIDIA, AMD ROCm, WSL). Without any of them no CUDA device can
#: be visible, and ``auto`` need not import torch (about 3 s) to learn that.
GPU_DEVICE_FILES = ("/dev/nvidiactl", "/dev/nvidia0", "/proc/driver/nvidia", "/dev/kfd", "/dev/dxg")


def cuda_available() -> bool:
    """Whether torch sees a CUDA device; False without importing torch where no GPU driver's
    device file (:data:`GPU_DEVICE_FILES`) exists."""
    if "torch" not in sys.modules and not any(os.path.exists(f) for f in GPU_DEVICE_FILES):
        return False
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return False
    return torch.cuda.is_available()


def get_backend(name: str = "auto", dtype: str | None = None):
    """The backend for ``encoding.backend``: ``numpy``, ``torch`` or ``auto``.

    ``auto`` takes torch on a CUDA GPU (float32 unless ``dtype`` says otherwise) and numpy
    otherwise (float64 unless told). An explicit ``torch`` runs on CUDA when present, else CPU.
    """
    if name not in BACKENDS:
        raise BrainshapeError(f"encoding.backend must be one of {list(BACKENDS)}, got {name!r}.")
    if dtype is not None and dtype not in ("float32", "float64"):
        raise BrainshapeError(f"encoding.dtype must be float32 or float64, got {dtype!r}.")
    if name == "auto":
        name = "torch" if cuda_available() else "numpy"
    if name == "torch":
        return TorchBackend(dtype or "float32")
    return NumpyBackend(dtype or "float64")
