"""Input conversion and validation shared by tlkit's estimators and losses.

Every check names the offending argument, so a learner sees ``ValueError: Xt must be 2-D (n_samples, n_features),
got shape (5,)`` rather than a shape error from deep inside a kernel.
"""
from __future__ import annotations

import numbers

import numpy as np
import torch

__all__ = [
    "to_tensor",
    "to_numpy",
    "check_2d",
    "check_1d",
    "check_same_dim",
    "check_same_length",
    "check_finite",
    "check_random_state",
    "torch_generator",
    "check_positive",
    "like_input",
    "check_pair",
]


def _is_array_like(x) -> bool:
    return isinstance(x, (torch.Tensor, np.ndarray, list, tuple, numbers.Number))


def to_tensor(x, name: str, dtype: torch.dtype | None = None, device=None) -> torch.Tensor:
    """Convert ``x`` (numpy array, torch tensor, list or scalar) to a torch tensor.

    Floating inputs keep their precision (float32 stays float32, float64 stays float64); integer and boolean
    inputs become ``torch.get_default_dtype()`` unless ``dtype`` is given. A tensor keeps its device unless
    ``device`` is given.
    """
    if not _is_array_like(x):
        raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(x).__name__}")
    if isinstance(x, torch.Tensor):
        tensor = x
    else:
        array = np.asarray(x)
        if array.dtype == object:
            raise TypeError(f"{name} must hold numbers, got an array of Python objects")
        tensor = torch.from_numpy(np.ascontiguousarray(array))
    if tensor.is_complex():
        raise TypeError(f"{name} must be real-valued, got complex dtype {tensor.dtype}")
    if dtype is None and not tensor.is_floating_point():
        dtype = torch.get_default_dtype()
    return tensor.to(dtype=dtype or tensor.dtype, device=device if device is not None else tensor.device)


def to_numpy(x, name: str, dtype=np.float64) -> np.ndarray:
    """Convert ``x`` (numpy array, torch tensor on any device, list) to a numpy array of ``dtype``."""
    if not _is_array_like(x):
        raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(x).__name__}")
    if isinstance(x, torch.Tensor):
        if x.is_complex():
            raise TypeError(f"{name} must be real-valued, got complex dtype {x.dtype}")
        x = x.detach().cpu().numpy()
    array = np.asarray(x)
    if array.dtype == object:
        raise TypeError(f"{name} must hold numbers, got an array of Python objects")
    if np.iscomplexobj(array):
        raise TypeError(f"{name} must be real-valued, got complex dtype {array.dtype}")
    return array.astype(dtype, copy=False) if dtype is not None else array


def check_finite(x, name: str):
    """Raise ``ValueError`` if ``x`` holds NaN or infinity; return ``x`` unchanged."""
    finite = torch.isfinite(x).all().item() if isinstance(x, torch.Tensor) else np.isfinite(np.asarray(x)).all()
    if not finite:
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


def check_2d(x, name: str, min_samples: int = 1, finite: bool = True):
    """Check that ``x`` is a 2-D array (n_samples, n_features) with at least ``min_samples`` rows and one column.

    Returns ``x`` unchanged (numpy stays numpy, torch stays torch).
    """
    if not isinstance(x, (torch.Tensor, np.ndarray)):
        raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(x).__name__}")
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_features), got shape {tuple(x.shape)}")
    if x.shape[0] < min_samples:
        raise ValueError(f"{name} needs at least {min_samples} sample(s), got {x.shape[0]}")
    if x.shape[1] == 0:
        raise ValueError(f"{name} has no features (shape {tuple(x.shape)})")
    if finite:
        check_finite(x, name)
    return x


def check_1d(x, name: str, length: int | None = None, finite: bool = True):
    """Check that ``x`` is 1-D (and of ``length`` if given); returns ``x`` unchanged."""
    if not isinstance(x, (torch.Tensor, np.ndarray)):
        raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(x).__name__}")
    if x.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(x.shape)}")
    if length is not None and x.shape[0] != length:
        raise ValueError(f"{name} must have length {length}, got {x.shape[0]}")
    if finite:
        check_finite(x, name)
    return x


def check_same_dim(a, b, names: tuple[str, str]) -> None:
    """Raise ``ValueError`` unless 2-D arrays ``a`` and ``b`` have the same number of features (columns)."""
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same number of features, got {a.shape[1]} and {b.shape[1]}"
        )


def check_same_length(a, b, names: tuple[str, str]) -> None:
    """Raise ``ValueError`` unless ``a`` and ``b`` have the same number of samples (rows)."""
    if len(a) != len(b):
        raise ValueError(f"{names[0]} and {names[1]} must have the same number of samples, got {len(a)} and {len(b)}")


def check_positive(value, name: str, allow_zero: bool = False) -> float:
    """Return ``value`` as a float after checking it is a finite positive (or non-negative) number."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not np.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'non-negative' if allow_zero else 'positive'} and finite, got {value}")
    return value


def check_random_state(seed) -> np.random.Generator:
    """Turn ``seed`` (None, an int, a ``np.random.Generator`` or a ``np.random.RandomState``) into a Generator."""
    if seed is None or (isinstance(seed, numbers.Integral) and not isinstance(seed, bool)):
        return np.random.default_rng(seed)
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, np.random.RandomState):
        return np.random.default_rng(seed.randint(0, 2**31 - 1))
    raise TypeError(f"random_state must be None, an int or a numpy Generator, got {type(seed).__name__}")


def torch_generator(seed, device="cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded from ``seed`` (anything ``check_random_state`` accepts)."""
    generator = torch.Generator(device=device)
    generator.manual_seed(int(check_random_state(seed).integers(0, 2**63 - 1)))
    return generator


def like_input(result: torch.Tensor, reference):
    """Return ``result`` as a numpy array if ``reference`` is not a torch tensor, else as a tensor on its device.

    tlkit functions answer in the type they were given: numpy in, numpy out (ready for scikit-learn's
    ``sample_weight``); torch in, torch out on the same device.
    """
    if isinstance(reference, torch.Tensor):
        return result.to(reference.device)
    return result.detach().cpu().numpy()


def check_pair(Xs, Xt, names: tuple[str, str] = ("Xs", "Xt"), min_samples: int = 1, dtype=None):
    """Validate two point clouds (n, d) and (m, d) and return them as torch tensors on one device.

    Numpy float64 stays float64; integer input becomes the default float dtype. ``dtype`` overrides both.
    """
    check_2d(Xs, names[0], min_samples=min_samples)
    check_2d(Xt, names[1], min_samples=min_samples)
    check_same_dim(Xs, Xt, names)
    xs, xt = to_tensor(Xs, names[0], dtype=dtype), to_tensor(Xt, names[1], dtype=dtype)
    if xs.device != xt.device:
        raise ValueError(f"{names[0]} and {names[1]} must be on the same device, got {xs.device} and {xt.device}")
    if xs.dtype != xt.dtype:
        common = torch.promote_types(xs.dtype, xt.dtype)
        xs, xt = xs.to(common), xt.to(common)
    return xs, xt
