"""The competing progress measures of the anti-grokking study (Golechha 2024; Omnigrok).

Four metrics that Prakash & Martin (2025) compare with the HTSR alpha and correlation traps:

- :func:`activation_sparsity` -- fraction of hidden activations at or below a threshold;
- :func:`weight_entropy` -- absolute weight entropy ``-sum |w| ln |w|`` per weight matrix;
- :func:`circuit_complexity` -- summed KL divergence between the softmax outputs of the model
  and of the model with a random fraction of one layer's weights set to zero;
- :func:`l2_norm` -- ``sqrt(sum of squared parameters)`` (Omnigrok's, biases included).

Formulas are those of Golechha (2024, arXiv 2405.12755) and Liu et al. (2022, Omnigrok). Where
the papers leave a choice open (threshold, layers, mask layer, number of masks), the default
chosen here and the reason are given in each docstring and in ``docs/baselines.md``.

None of these functions modifies the model: activations are read with forward hooks that are
removed afterwards, masked weights are passed through :func:`torch.func.functional_call`, and
the train/eval flag of every sub-module is restored.
"""

from __future__ import annotations

import contextlib
import logging
import math
import numbers
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from ._results import Result
from ._validation import check_bool, check_positive_int, check_rng, check_scalar, is_tensor
from .layers import find_layers, load_state_dict

__all__ = [
    "ActivationSparsity",
    "WeightEntropy",
    "CircuitComplexity",
    "L2Norm",
    "activation_sparsity",
    "weight_entropy",
    "circuit_complexity",
    "l2_norm",
    "compute_baselines",
]

logger = logging.getLogger(__name__)

#: Default number of inputs per forward pass (bounds the memory of the hooks).
DEFAULT_BATCH_SIZE = 1024
#: Default number of random masks averaged by :func:`circuit_complexity`.
DEFAULT_N_MASKS = 5
#: Buffers of a state dict that are statistics, not parameters (left out of the l2 norm).
_BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")


@dataclass(frozen=True)
class ActivationSparsity(Result):
    """Fraction of hidden activations ``<= threshold``.

    Attributes
    ----------
    per_layer : dict of str -> float
        Module name -> fraction over all inputs and units of that module's output.
    mean : float
        Unweighted mean of ``per_layer`` over the layers.
    threshold : float
        The threshold tau used.
    n_inputs : int
        Inputs the model was run on.
    hooked : str
        ``"activations"`` (outputs of activation modules) or ``"pre-activations"`` (outputs of
        the hidden Linear / Conv layers, used when the model has no activation module).
    """

    per_layer: dict[str, float]
    mean: float
    threshold: float
    n_inputs: int
    hooked: str


@dataclass(frozen=True)
class WeightEntropy(Result):
    """Absolute weight entropy ``H_abs(W) = -sum_ij |w_ij| ln |w_ij|`` (nats, ``0 ln 0 = 0``).

    Attributes
    ----------
    per_layer : dict of str -> float
        Layer name -> entropy of its weight matrix (conv kernels: all entries).
    total : float
        Sum over the layers.
    """

    per_layer: dict[str, float]
    total: float


@dataclass(frozen=True)
class CircuitComplexity(Result):
    """Approximate local circuit complexity (Golechha 2024).

    Attributes
    ----------
    per_layer : dict of str -> float
        Layer name -> mean over the masks of ``sum_x KL(softmax f_W(x) || softmax f_W'(x))``.
    per_mask : dict of str -> list of float
        The summed KL of each mask.
    mean : float
        Mean of ``per_layer`` over the layers (the value itself when one layer is masked).
    fraction : float
        Fraction of the layer's weights set to zero in each mask.
    n_masks : int
        Masks averaged.
    n_inputs : int
        Inputs summed over.
    """

    per_layer: dict[str, float]
    per_mask: dict[str, list[float]]
    mean: float
    fraction: float
    n_masks: int
    n_inputs: int


@dataclass(frozen=True)
class L2Norm(Result):
    """``sqrt(sum of squared parameters)``.

    Attributes
    ----------
    per_layer : dict of str -> float
        Module name (parameter name without its last component) -> norm of its parameters.
    total : float
        ``sqrt(sum(per_layer[k] ** 2))``.
    include_bias : bool
        Whether 1-D parameters (biases, norm scales) are counted.
    """

    per_layer: dict[str, float]
    total: float
    include_bias: bool


# ----------------------------------------------------------------------------- helpers
def _module(model: Any, func: str):
    import torch.nn as nn

    if not isinstance(model, nn.Module):
        raise TypeError(f"{func} runs the model, so model must be a torch.nn.Module; got "
                        f"{type(model).__name__}. Build the model and call model.load_state_dict(sd) first.")
    return model


@contextlib.contextmanager
def _eval_mode(model: Any) -> Iterator[None]:
    """model.eval() for the duration, then every sub-module's own flag restored."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


def _reference_param(model: Any):
    for p in model.parameters():
        return p
    return None


def _as_inputs(inputs: Any, model: Any):
    import torch

    if isinstance(inputs, np.ndarray) or isinstance(inputs, (list, tuple)):
        inputs = torch.as_tensor(np.asarray(inputs))
    if not is_tensor(inputs):
        raise TypeError(f"inputs must be a numpy array or torch tensor of shape (n_samples, ...); got "
                        f"{type(inputs).__name__}.")
    if inputs.ndim < 1 or inputs.shape[0] == 0:
        raise ValueError(f"inputs must have at least one sample along axis 0; got shape {tuple(inputs.shape)}.")
    ref = _reference_param(model)
    if ref is not None:
        if inputs.is_floating_point() and ref.is_floating_point():
            inputs = inputs.to(dtype=ref.dtype)
        inputs = inputs.to(ref.device)
    if inputs.is_floating_point() and not bool(torch.isfinite(inputs).all()):
        raise ValueError("inputs must be finite; got NaN or Inf.")
    return inputs


def _run(model: Any, x: Any, batch_size: int, call: Callable[[Any], Any] | None = None) -> Iterator[Any]:
    """Forward passes over x in batches; a shape mismatch raises a ValueError naming inputs."""
    import torch

    call = call or model
    with torch.no_grad():
        for start in range(0, x.shape[0], batch_size):
            xb = x[start:start + batch_size]
            try:
                out = call(xb)
            except (RuntimeError, ValueError, IndexError) as exc:
                raise ValueError(f"inputs of shape {tuple(x.shape)} (dtype {x.dtype}) do not fit the model "
                                 f"{type(model).__name__}: {str(exc).splitlines()[0]}. Pass inputs shaped "
                                 f"as in training, e.g. (n_samples, n_features).") from exc
            yield xb, out


def _first_tensor(out: Any):
    if is_tensor(out):
        return out
    if isinstance(out, (tuple, list)) and out and is_tensor(out[0]):
        return out[0]
    if isinstance(out, Mapping):
        for v in out.values():
            if is_tensor(v):
                return v
    return None


def _check_fraction(value: Any) -> float:
    return check_scalar(value, "fraction", numbers.Real, min_val=0.0, max_val=1.0, include_boundaries="right",
                        fix="It is the share of the layer's weights set to zero; the study uses 0.1.")


def _check_threshold(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise TypeError(f"threshold must be a finite real number; got {value!r}.")
    return float(value)


def _weights(model: Any, func: str) -> Any:
    """A module or a mapping (loading a path); TypeError otherwise."""
    import torch.nn as nn

    if isinstance(model, nn.Module) or isinstance(model, Mapping):
        return model
    if isinstance(model, (str, bytes)) or hasattr(model, "__fspath__"):
        return load_state_dict(model)
    raise TypeError(f"{func}: model must be a torch.nn.Module, a state dict or a checkpoint path; got "
                    f"{type(model).__name__}.")


# ----------------------------------------------------------------------------- metrics
_ACTIVATIONS: tuple[str, ...] = ("ReLU", "ReLU6", "LeakyReLU", "PReLU", "RReLU", "ELU", "SELU", "CELU", "GELU",
                                 "SiLU", "Mish", "Softplus", "Tanh", "Sigmoid", "Hardtanh", "Hardswish",
                                 "Hardsigmoid", "Softsign", "Tanhshrink", "Threshold")


def activation_sparsity(model: Any, inputs: Any, *, threshold: float = 0.0, layers: Sequence[str] | str | None = None,
                        batch_size: int = DEFAULT_BATCH_SIZE) -> ActivationSparsity:
    """Fraction of hidden activations at or below ``threshold``, per layer and mean.

    ``A_s = mean_{i, j} 1(b_ij <= tau)`` over inputs ``i`` and units ``j`` of a layer's output
    ``b`` (Golechha 2024, who write ``b_ij < tau`` and leave tau open). Activations are read with
    forward hooks on any module (``nn.Sequential`` or not); the hooks are removed afterwards.

    Parameters
    ----------
    model : torch.nn.Module
    inputs : ndarray or torch.Tensor, shape (n_samples, ...)
        Training inputs, shaped as the model expects; cast to the model's dtype and device.
    threshold : float, default 0.0
        tau. With 0 and post-ReLU activations this is the fraction of exactly inactive units,
        the natural sparsity of a ReLU network and free of any scale; a positive tau also
        counts small activations and depends on the weights' scale.
    layers : str or list of str, optional
        Module names whose outputs are read. Default: every activation module (``nn.ReLU``,
        ``nn.GELU``, ...). If the model has none (activations applied functionally), the
        outputs of its Linear / Conv layers except the last (output) layer are read: for
        ReLU and ``tau >= 0``, ``relu(z) <= tau`` exactly when ``z <= tau``, so the value is
        the same as on the post-ReLU activations.
    batch_size : int, default 1024
        Inputs per forward pass.

    Returns
    -------
    ActivationSparsity

    Raises
    ------
    TypeError
        ``model`` not a module; ``inputs`` not an array.
    ValueError
        ``inputs`` that do not fit the model (the message gives their shape); unknown ``layers``.

    Examples
    --------
    >>> import torch, torch.nn as nn
    >>> model = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1))
    >>> with torch.no_grad():
    ...     _ = model[0].weight.copy_(torch.eye(2)); _ = model[0].bias.zero_()
    >>> activation_sparsity(model, torch.tensor([[1.0, -1.0]])).per_layer
    {'1': 0.5}
    """
    import torch.nn as nn

    model = _module(model, "activation_sparsity")
    threshold = _check_threshold(threshold)
    batch_size = check_positive_int(batch_size, "batch_size")
    x = _as_inputs(inputs, model)
    modules = dict(model.named_modules())
    hooked = "activations"
    if layers is None:
        names = [n for n, m in modules.items() if n and type(m).__name__ in _ACTIVATIONS]
        if not names:
            hooked = "pre-activations"
            names = [n for n, m in modules.items()
                     if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)) or type(m).__name__ == "Conv1D"][:-1]
        if not names:
            raise ValueError(f"model {type(model).__name__} has no activation module and fewer than two "
                             f"Linear/Conv layers; pass layers=[module names] to choose the outputs to read.")
    else:
        names = [layers] if isinstance(layers, str) else list(layers)
        unknown = [n for n in names if n not in modules]
        if unknown:
            raise ValueError(f"layers {unknown} are not modules of {type(model).__name__}; module names are "
                             f"{[n for n in modules if n][:30]}.")
    below = dict.fromkeys(names, 0)
    total = dict.fromkeys(names, 0)

    def make_hook(name: str):
        def hook(module, args, output):
            out = _first_tensor(output)
            if out is not None:
                below[name] += int((out <= threshold).sum())
                total[name] += out.numel()
        return hook

    handles = [modules[n].register_forward_hook(make_hook(n)) for n in names]
    try:
        with _eval_mode(model):
            for _ in _run(model, x, batch_size):
                pass
    finally:
        for h in handles:
            h.remove()
    per_layer = {n: (below[n] / total[n] if total[n] else math.nan) for n in names}
    vals = [v for v in per_layer.values() if not math.isnan(v)]
    mean = float(np.mean(vals)) if vals else math.nan
    return ActivationSparsity(per_layer=per_layer, mean=mean, threshold=threshold, n_inputs=int(x.shape[0]),
                              hooked=hooked)


def weight_entropy(model: Any, *, layers: Any = None) -> WeightEntropy:
    """Absolute weight entropy ``-sum_ij |w_ij| ln |w_ij|`` of each weight matrix, and the total.

    Not normalised (Golechha 2024); in nats; ``0 ln 0 = 0``. Each term is positive for
    ``|w| < 1`` and negative above, so the value depends on the scale of the weights.

    Parameters
    ----------
    model : torch.nn.Module, state dict or checkpoint path
    layers : str or list of str, optional
        Restrict to these layers (``include`` of :func:`~htsr_diag.layers.find_layers`). Default:
        every Linear, Conv1d, Conv2d, Embedding and Conv1D weight (state dict: every 2-4-D
        ``*weight``), small ones included; biases are not weight matrices and are left out.

    Returns
    -------
    WeightEntropy

    Examples
    --------
    >>> import numpy as np
    >>> W = np.full((2, 2), np.exp(-1.0))     # each term: e^-1 * 1
    >>> round(weight_entropy({"fc.weight": W}).total, 6), round(float(4 * np.exp(-1.0)), 6)
    (1.471518, 1.471518)
    """
    src = _weights(model, "weight_entropy")
    found = find_layers(src, include=layers, min_eigenvalues=1)
    per_layer: dict[str, float] = {}
    for lm in found:
        W = lm.weight
        if is_tensor(W):
            import torch

            a = W.detach().to(torch.float64).abs()
            per_layer[lm.name] = float(-torch.special.xlogy(a, a).sum())
        else:
            from scipy.special import xlogy

            a = np.abs(np.asarray(W, dtype=np.float64))
            per_layer[lm.name] = float(-xlogy(a, a).sum())
    return WeightEntropy(per_layer=per_layer, total=float(sum(per_layer.values())))


def l2_norm(model: Any, *, include_bias: bool = True) -> L2Norm:
    """``sqrt(sum of squared parameters)`` of a model, per module and in total.

    Parameters
    ----------
    model : torch.nn.Module, state dict or checkpoint path
        Of a module, its parameters (not buffers; a tied weight counted once). Of a state
        dict, every floating-point entry except BatchNorm statistics (``running_mean``,
        ``running_var``).
    include_bias : bool, default True
        Count 1-D parameters (biases, norm scales), as Omnigrok's norm does. False: only
        parameters with two or more dimensions (the weight matrices).

    Returns
    -------
    L2Norm

    Examples
    --------
    >>> import numpy as np
    >>> r = l2_norm({"fc.weight": np.array([[3.0, 0.0], [0.0, 0.0]]), "fc.bias": np.array([4.0, 0.0])})
    >>> r.total, l2_norm({"fc.weight": np.array([[3.0, 0.0], [0.0, 0.0]]), "fc.bias": np.array([4.0, 0.0])},
    ...                  include_bias=False).total
    (5.0, 3.0)
    """
    import torch.nn as nn

    include_bias = check_bool(include_bias, "include_bias")
    src = _weights(model, "l2_norm")
    if isinstance(src, nn.Module):
        items = list(src.named_parameters())  # named_parameters() yields a tied parameter once
    else:
        items = [(str(k), v) for k, v in src.items()
                 if (is_tensor(v) and v.is_floating_point())
                 or (isinstance(v, np.ndarray) and np.issubdtype(v.dtype, np.floating))]
        items = [(k, v) for k, v in items if not k.endswith(_BUFFER_SUFFIXES)]
    sq: dict[str, float] = {}
    for name, v in items:
        if not include_bias and v.ndim < 2:
            continue
        if is_tensor(v):
            import torch

            s = float(v.detach().to(torch.float64).square().sum())
        else:
            s = float(np.square(np.asarray(v, dtype=np.float64)).sum())
        module = name.rsplit(".", 1)[0] if "." in name else name
        sq[module] = sq.get(module, 0.0) + s
    if not math.isfinite(sum(sq.values())):
        bad = [k for k, v in sq.items() if not math.isfinite(v)]
        logger.warning("l2_norm: non-finite parameters in %s", bad)
    return L2Norm(per_layer={k: math.sqrt(v) for k, v in sq.items()}, total=math.sqrt(sum(sq.values())),
                  include_bias=bool(include_bias))


def circuit_complexity(model: Any, inputs: Any, *, fraction: float = 0.1, layer: str | Sequence[str] | None = None,
                       n_masks: int = DEFAULT_N_MASKS, rng: Any = None,
                       batch_size: int = DEFAULT_BATCH_SIZE) -> CircuitComplexity:
    """Summed KL between the model's softmax outputs and those with a random share of one layer zeroed.

    ``C = sum_x KL( softmax(f_W(x)) || softmax(f_W'(x)) )`` with ``W'`` equal to ``W`` except a
    uniformly random ``fraction`` of one layer's weights (``round(fraction * size)`` entries,
    without replacement) set to zero (Golechha 2024). Averaged over ``n_masks`` masks. The
    masked weight is passed to :func:`torch.func.functional_call`; the model is not modified.

    Parameters
    ----------
    model : torch.nn.Module
        Its output (first element if a tuple) must be logits of shape (n_samples, ..., n_classes).
    inputs : ndarray or torch.Tensor, shape (n_samples, ...)
        Training inputs.
    fraction : float, default 0.1
        Share of the layer's weights set to zero (the paper's 10%).
    layer : str or list of str, optional
        Layer(s) to mask, by name as in :func:`~htsr_diag.layers.find_layers` (``"fc1"``). Default:
        the first analysable layer (for the study's MLP ``fc1``, 157k of its 199k weights and
        the layer where the study sees anti-grokking most clearly).
    n_masks : int, default 5
        Independent random masks averaged (the paper does not say; 5 keeps the mask-to-mask
        spread of the mean below ~1/sqrt(5) of one mask's while costing 5 forward passes).
    rng : None, int or numpy.random.Generator
        Seeds the masks.
    batch_size : int, default 1024

    Returns
    -------
    CircuitComplexity

    Examples
    --------
    >>> import torch, torch.nn as nn
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    >>> cc = circuit_complexity(model, torch.randn(16, 4), rng=0)
    >>> cc.mean >= 0, list(cc.per_layer)
    (True, ['0'])
    """
    import torch
    from torch.func import functional_call

    model = _module(model, "circuit_complexity")
    fraction = _check_fraction(fraction)
    n_masks = check_positive_int(n_masks, "n_masks")
    batch_size = check_positive_int(batch_size, "batch_size")
    gen = check_rng(rng)
    x = _as_inputs(inputs, model)
    found = find_layers(model, min_eigenvalues=1)
    if layer is None:
        chosen = [found.layers[0]]
    else:
        wanted = [layer] if isinstance(layer, str) else list(layer)
        if not wanted or not all(isinstance(w, str) for w in wanted):
            raise TypeError(f"layer must be None, a layer name or a list of layer names; got {layer!r}.")
        try:
            chosen = [found[w] for w in wanted]
        except KeyError:
            raise ValueError(f"layer {layer!r} is not an analysable layer of {type(model).__name__}; "
                             f"layers are {found.names}.") from None
    params = dict(model.named_parameters(remove_duplicate=False))

    def log_softmax(out: Any):
        logits = _first_tensor(out)
        if logits is None or logits.ndim < 2:
            raise ValueError(f"circuit_complexity needs logits of shape (n_samples, ..., n_classes) from the "
                             f"model; got {None if logits is None else tuple(logits.shape)}.")
        return torch.log_softmax(logits.to(torch.float64), dim=-1)

    per_layer: dict[str, float] = {}
    per_mask: dict[str, list[float]] = {}
    with _eval_mode(model):
        ref = [log_softmax(out) for _, out in _run(model, x, batch_size)]
        for lm in chosen:
            W = params[lm.param].detach()
            k = int(round(fraction * W.numel()))
            values = []
            for _ in range(n_masks):
                idx = torch.from_numpy(gen.choice(W.numel(), size=k, replace=False)).to(W.device)
                Wm = W.clone().reshape(-1)
                Wm[idx] = 0
                Wm = Wm.reshape(W.shape)

                def masked(xb, _Wm=Wm, _name=lm.param):
                    return functional_call(model, {_name: _Wm}, (xb,))

                kl = 0.0
                for (xb, out), lp in zip(_run(model, x, batch_size, masked), ref):
                    lq = log_softmax(out)
                    kl += float((lp.exp() * (lp - lq)).sum())
                values.append(kl)
            per_layer[lm.name] = float(np.mean(values))
            per_mask[lm.name] = values
    return CircuitComplexity(per_layer=per_layer, per_mask=per_mask, mean=float(np.mean(list(per_layer.values()))),
                             fraction=fraction, n_masks=n_masks, n_inputs=int(x.shape[0]))


def compute_baselines(source: Any, inputs: Any = None, *, rng: Any = None,
                      model_factory: Callable[[], Any] | None = None, threshold: float = 0.0,
                      fraction: float = 0.1, n_masks: int = DEFAULT_N_MASKS) -> dict[str, float]:
    """All four baselines of one checkpoint as a flat dict (used by the trajectory code).

    Parameters
    ----------
    source : torch.nn.Module, state dict or checkpoint path
    inputs : array or tensor, optional
        Training inputs; without them (or without a module) activation sparsity and circuit
        complexity are NaN.
    rng : None, int or Generator
        Seeds the circuit-complexity masks.
    model_factory : callable, optional
        ``model_factory()`` returns a fresh ``torch.nn.Module`` into which a state dict ``source``
        is loaded (``load_state_dict``), so that the activation-based baselines can run.
    threshold, fraction, n_masks
        Passed to :func:`activation_sparsity` and :func:`circuit_complexity`.

    Returns
    -------
    dict
        ``l2_norm``, ``weight_entropy``, ``activation_sparsity``, ``circuit_complexity``.

    Examples
    --------
    >>> import numpy as np
    >>> compute_baselines({"fc.weight": np.array([[3.0, 4.0]])})["l2_norm"]
    5.0
    """
    import torch.nn as nn

    src = source if isinstance(source, nn.Module) else _weights(source, "compute_baselines")
    module = src if isinstance(src, nn.Module) else None
    if module is None and model_factory is not None:
        module = model_factory()
        import torch

        module.load_state_dict({k: (v if is_tensor(v) else torch.as_tensor(v)) for k, v in src.items()})
    out = {"l2_norm": l2_norm(src).total, "weight_entropy": weight_entropy(src).total,
           "activation_sparsity": math.nan, "circuit_complexity": math.nan}
    if module is not None and inputs is not None:
        out["activation_sparsity"] = activation_sparsity(module, inputs, threshold=threshold).mean
        out["circuit_complexity"] = circuit_complexity(module, inputs, fraction=fraction, n_masks=n_masks,
                                                       rng=rng).mean
    return out
