"""Input conversion and validation shared by tlkit's estimators and losses.

Every check names the offending argument, so a learner sees ``ValueError: Xt must be 2-D (n_samples, n_features),
got shape (5,)`` rather than a shape error from deep inside a kernel.
"""
from __future__ import annotations

import math
import numbers

import numpy as np
import scipy.sparse
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
    "check_positive_int",
    "check_in_range",
    "like_input",
    "check_pair",
    "check_points",
    "check_point_pair",
    "check_choice",
    "check_bandwidths",
    "check_point_weights",
]


def _check_array_like(x, name: str) -> None:
    """``TypeError`` unless ``x`` is a numpy array, a torch tensor or array-like (list, number, pandas, ``__array__``)."""
    if scipy.sparse.issparse(x):
        raise TypeError(f"{name} must be dense, got a sparse {type(x).__name__}: sparse input is not supported "
                        "(call .toarray())")
    if not (isinstance(x, (torch.Tensor, np.ndarray, list, tuple, numbers.Number)) or hasattr(x, "__array__")):
        raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(x).__name__}")


def _as_array(x, name: str):
    """``x`` itself if it is a numpy array or torch tensor, else ``np.asarray(x)`` (lists, pandas, ...)."""
    _check_array_like(x, name)
    return x if isinstance(x, (torch.Tensor, np.ndarray)) else np.asarray(x)


def _complex_error(name: str, dtype) -> ValueError:
    return ValueError(f"{name} must be real-valued, got dtype {dtype} (Complex data not supported)")


def _numeric_array(array: np.ndarray, name: str) -> np.ndarray:
    """An object array of numbers as float64; anything else in it is a ``TypeError`` naming ``name``."""
    try:
        return array.astype(np.float64)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{name} must hold numbers, got an object array ({error})") from None


def to_tensor(x, name: str, dtype: torch.dtype | None = None, device=None) -> torch.Tensor:
    """Convert ``x`` (numpy array, torch tensor, list or scalar) to a torch tensor.

    Floating inputs keep their precision (float32 stays float32, float64 stays float64); integer and boolean
    inputs become ``torch.get_default_dtype()`` unless ``dtype`` is given. A tensor keeps its device unless
    ``device`` is given.
    """
    _check_array_like(x, name)
    if isinstance(x, torch.Tensor):
        tensor = x
    else:
        array = np.asarray(x)
        if array.dtype == object:
            array = _numeric_array(array, name)
        tensor = torch.from_numpy(np.ascontiguousarray(array))
    if tensor.is_complex():
        raise _complex_error(name, tensor.dtype)
    if dtype is None and not tensor.is_floating_point():
        dtype = torch.get_default_dtype()
    return tensor.to(dtype=dtype or tensor.dtype, device=device if device is not None else tensor.device)


def to_numpy(x, name: str, dtype=np.float64) -> np.ndarray:
    """Convert ``x`` (numpy array, torch tensor on any device, list) to a numpy array of ``dtype``.

    ``dtype=None`` keeps the array's own dtype (labels: strings and objects stay as they are); a numeric
    ``dtype`` also converts object arrays of numbers.
    """
    _check_array_like(x, name)
    if isinstance(x, torch.Tensor):
        if x.is_complex():
            raise _complex_error(name, x.dtype)
        x = x.detach().cpu().numpy()
    array = np.asarray(x)
    if np.iscomplexobj(array):
        raise _complex_error(name, array.dtype)
    if array.dtype == object and dtype is not None:
        array = _numeric_array(array, name)
    return array.astype(dtype, copy=False) if dtype is not None else array


def check_finite(x, name: str):
    """Raise ``ValueError`` if ``x`` holds NaN or infinity; return ``x`` unchanged.

    Skipped while ``torch.compile`` traces: the check reads data, which would break the graph."""
    if isinstance(x, torch.Tensor):
        if torch.compiler.is_compiling():
            return x
        finite = torch.isfinite(x).all().item()
    else:
        array = np.asarray(x)
        finite = np.isfinite(_numeric_array(array, name) if array.dtype == object else array).all()
    if not finite:
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


def check_2d(x, name: str, min_samples: int = 1, finite: bool = True):
    """Check that ``x`` is a 2-D array (n_samples, n_features) with at least ``min_samples`` rows and one column.

    Returns ``x`` unchanged if it is a numpy array or a torch tensor, other array-likes (lists, pandas) as numpy.
    Messages keep scikit-learn's phrases ("1 sample(s)", "0 feature(s)", "Complex data not supported", "sparse")
    so its estimator checks recognise them.
    """
    x = _as_array(x, name)
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_features), got shape {tuple(x.shape)}")
    if x.shape[0] < min_samples:
        raise ValueError(f"{name} must have at least {min_samples} samples, got {x.shape[0]} sample(s)")
    if x.shape[1] == 0:
        raise ValueError(f"{name} must have at least one feature, found 0 feature(s) (shape={tuple(x.shape)}) "
                         "while a minimum of 1 is required.")
    if x.is_complex() if isinstance(x, torch.Tensor) else np.iscomplexobj(x):
        raise _complex_error(name, x.dtype)
    if finite:
        check_finite(x, name)
    return x


def check_1d(x, name: str, length: int | None = None, finite: bool = True):
    """Check that ``x`` is 1-D (and of ``length`` if given); returns it as :func:`check_2d` does."""
    x = _as_array(x, name)
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


def _as_scalar(value, name: str, kind: str):
    """A Python number from any real numeric scalar: Python, numpy, or a 0-dim numpy array / torch tensor."""
    if isinstance(value, (np.ndarray, torch.Tensor)) and value.ndim == 0:
        value = value.item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be {kind}, got {value!r} ({type(value).__name__})")
    return value


def _describe_range(low, high, low_inclusive: bool, high_inclusive: bool) -> str:
    if high is None:
        return f"{'>=' if low_inclusive else '>'} {low}"
    if low is None:
        return f"{'<=' if high_inclusive else '<'} {high}"
    return f"in {'[' if low_inclusive else '('}{low}, {high}{']' if high_inclusive else ')'}"


def check_in_range(value, name: str, low=None, high=None, *, integer: bool = False, low_inclusive: bool = True,
                   high_inclusive: bool = True):
    r"""Return ``value`` as a Python ``int`` (``integer=True``) or ``float`` after checking $v \in [l, h]$.

    Any real numeric type is accepted — Python, numpy (``np.int64(5)``), a 0-dim array or tensor — but not
    ``bool``; an integer parameter refuses non-integral types (``2.0`` included). ``low`` / ``high`` of ``None``
    leave that side open; ``low_inclusive`` / ``high_inclusive`` choose $[$ or $($. Floats must be
    finite. Errors read ``"<name> must be an integer in [1, 800], got 0"`` (``TypeError`` for a wrong type,
    ``ValueError`` for a value out of range). The one number check of every tlkit estimator and function.
    """
    kind = "an integer" if integer else "a number"
    value = _as_scalar(value, name, kind)
    if integer:
        if not isinstance(value, numbers.Integral):
            raise TypeError(f"{name} must be {kind}, got {value!r} ({type(value).__name__})")
        value = int(value)
    else:
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value}")
    below = low is not None and (value < low or (value == low and not low_inclusive))
    above = high is not None and (value > high or (value == high and not high_inclusive))
    if below or above:
        raise ValueError(f"{name} must be {kind} {_describe_range(low, high, low_inclusive, high_inclusive)}, "
                         f"got {value}")
    return value


def check_positive_int(value, name: str, minimum: int = 1) -> int:
    r"""Return ``value`` as an ``int`` after checking it is an integer $\ge$ ``minimum`` (default 1)."""
    return check_in_range(value, name, low=minimum, integer=True)


def check_positive(value, name: str, allow_zero: bool = False) -> float:
    r"""Return ``value`` as a finite ``float`` $> 0$ ($\ge 0$ with ``allow_zero``)."""
    return check_in_range(value, name, low=0, low_inclusive=allow_zero)


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


def like_input(result, reference):
    """Return ``result`` (a numpy array or torch tensor) in the type of ``reference``: the package's one rule.

    tlkit functions answer in the type they were given: numpy in, numpy out (ready for scikit-learn's
    ``sample_weight``); torch in, torch out on the same device. Labels torch cannot hold (strings, objects)
    stay numpy.
    """
    if isinstance(reference, torch.Tensor):
        if isinstance(result, np.ndarray):
            if result.dtype.kind not in "biuf":
                return result
            result = torch.from_numpy(np.ascontiguousarray(result))
        return result.to(reference.device)
    return result.detach().cpu().numpy() if isinstance(result, torch.Tensor) else np.asarray(result)


def check_pair(Xs, Xt, names: tuple[str, str] = ("Xs", "Xt"), min_samples: int = 1, dtype=None):
    """Validate two point clouds (n, d) and (m, d) and return them as torch tensors on one device.

    Numpy float64 stays float64; integer input becomes the default float dtype. ``dtype`` overrides both.
    """
    Xs, Xt = check_2d(Xs, names[0], min_samples=min_samples), check_2d(Xt, names[1], min_samples=min_samples)
    check_same_dim(Xs, Xt, names)
    xs, xt = to_tensor(Xs, names[0], dtype=dtype), to_tensor(Xt, names[1], dtype=dtype)
    if xs.device != xt.device:
        raise ValueError(f"{names[0]} and {names[1]} must be on the same device, got {xs.device} and {xt.device}")
    if xs.dtype != xt.dtype:
        common = torch.promote_types(xs.dtype, xt.dtype)
        xs, xt = xs.to(common), xt.to(common)
    return xs, xt


# ---------------------------------------------------------------- the kernel ops' checks (tl.kernels)
def check_points(value, name: str, finite: bool = True) -> torch.Tensor:
    """A point cloud of shape (n, d), n, d ≥ 1, as a real floating torch tensor.

    numpy becomes torch (sharing memory where it can; negative strides such as ``np.flip`` are copied); integer
    and boolean input becomes the default float dtype. The finiteness check is skipped while ``torch.compile``
    traces (it reads data). Used by every ``tl.kernels`` op.
    """
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(np.ascontiguousarray(value))
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array of shape (n, d), got {type(value).__name__}")
    if value.dim() != 2:
        raise ValueError(f"{name} must be 2-D (n, d), got shape {tuple(value.shape)}")
    if value.shape[0] == 0 or value.shape[1] == 0:
        raise ValueError(f"{name} must hold at least one point of at least one feature, got shape {tuple(value.shape)}")
    if value.is_complex():
        raise TypeError(f"{name} must be real, got {value.dtype}")
    if not value.is_floating_point():
        value = value.to(torch.get_default_dtype())
    if finite:
        check_finite(value, name)
    return value


def check_point_pair(x, y, names: tuple[str, str] = ("x", "y")) -> tuple[torch.Tensor, torch.Tensor]:
    """Two point clouds (n, d) and (m, d) on one device, as :func:`check_points` returns them."""
    x, y = check_points(x, names[0], finite=False), check_points(y, names[1], finite=False)
    check_same_dim(x, y, names)
    if x.device != y.device:
        raise ValueError(f"{names[0]} and {names[1]} must be on the same device, got {x.device} and {y.device}")
    check_finite(x, names[0])
    check_finite(y, names[1])
    return x, y


def check_choice(value, name: str, choices) -> str:
    """``value`` if it is one of ``choices``, else ``ValueError: <name> must be one of (...), got ...``."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value


def check_bandwidths(sigma, name: str = "sigma", max_count: int | None = None) -> list[float]:
    r"""Kernel bandwidths $\sigma_1, \dots, \sigma_S > 0$ as a list of Python floats.

    ``sigma`` is one number of any real type (Python, numpy, a 0-dim tensor) or a non-empty sequence, array or
    tensor of them; at most ``max_count`` of them.
    """
    if isinstance(sigma, torch.Tensor):
        sigma = sigma.detach().cpu().reshape(-1).tolist() if sigma.dim() else float(sigma)
    if isinstance(sigma, np.ndarray):
        sigma = sigma.reshape(-1).tolist()
    values = list(sigma) if isinstance(sigma, (list, tuple, range)) else [sigma]
    if not values:
        raise ValueError(f"{name} must be a positive number or a non-empty sequence of them, got an empty sequence")
    if any(isinstance(s, (bool, np.bool_, str)) or not isinstance(s, numbers.Real) for s in values):
        raise TypeError(f"{name} must be a positive number or a sequence of them, got {sigma!r}")
    values = [float(s) for s in values]
    if not all(math.isfinite(s) and s > 0 for s in values):
        raise ValueError(f"{name} must be positive and finite, got {values}")
    if max_count is not None and len(values) > max_count:
        raise ValueError(f"{name} must hold at most {max_count} bandwidths, got {len(values)}")
    return values


def check_point_weights(value, length: int, name: str, device, dtype) -> torch.Tensor:
    """Non-negative finite weights of shape (length,) on ``device``, converted to ``dtype``."""
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(np.ascontiguousarray(value))
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a tensor or array of shape ({length},), got {type(value).__name__}")
    if value.dim() != 1 or value.shape[0] != length:
        raise ValueError(f"{name} must have shape ({length},), got {tuple(value.shape)}")
    if value.device != device:
        raise ValueError(f"{name} must be on {device}, got {value.device}")
    check_finite(value, name)
    if not torch.compiler.is_compiling() and bool((value < 0).any()):
        raise ValueError(f"{name} must be non-negative, got a minimum of {float(value.min())}")
    return value.to(dtype)
