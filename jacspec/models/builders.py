"""Model builders (MLP, small CNN), a JSON-able model ``spec``, and safe checkpoints.

MLP: ``h^l = W^l x^{l-1} + b^l``, ``x^l = phi(h^l)`` with ``W_ij ~ N(0, sigma_w^2 / fan_in)``
(or a scaled orthogonal matrix) and ``b_i ~ N(0, sigma_b^2)`` (mean-field convention).
A checkpoint is ``{"format": "jacspec-checkpoint", "version": 1, "spec": spec,
"state_dict": ...}`` written with ``torch.save`` and read with ``weights_only=True``.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.utils import skip_init

from jacspec._util.random import torch_generator
from jacspec._util.validation import check_choice
from jacspec.models.activations import REGISTRY, Erf, canonical_name
from jacspec.models.resnet import resnet

__all__ = [
    "ACTIVATIONS",
    "CHECKPOINT_FORMAT",
    "Erf",
    "build_model",
    "default_sigma_w",
    "load_checkpoint",
    "make_activation",
    "mlp",
    "save_checkpoint",
    "small_cnn",
    "state_dict_mismatch",
]

#: The activations the builders take (canonical names of :mod:`jacspec.models.activations`;
#: torch's spellings such as ``"hardtanh"`` are accepted too).
ACTIVATIONS = ("relu", "relu6", "tanh", "hard_tanh", "hard_sigmoid", "erf", "linear")
INITS = ("gaussian", "orthogonal")
CHECKPOINT_FORMAT = "jacspec-checkpoint"
CHECKPOINT_VERSION = 1
#: What to do with weights that come without their architecture (a state_dict, a Lightning
#: checkpoint): :func:`save_checkpoint` stores jacspec's own mlp/cnn architectures only.
WEIGHTS_HINT = ("load it into its architecture with package.module:factory --weights FILE "
                "(jacspec track: --weights DIR for a folder of them; Python: "
                "load_model('package.module:factory', weights=FILE))")


def make_activation(name: str) -> nn.Module:
    """The activation module for ``name`` in ``ACTIVATIONS`` (``linear`` is the identity;
    ``hard_sigmoid`` is torch's ``relu6(x + 3) / 6``; ``hard_tanh`` clips to [-1, 1])."""
    return REGISTRY[canonical_name(name, ACTIVATIONS)].make_module()


def default_sigma_w(activation: str) -> float:
    """Trainable default weight scale: ``sqrt(2)`` for relu/relu6 (He), 6 for hard_sigmoid
    (its slope is 1/6, so sigma_w = 1 shrinks the backward signal by chi ~ 1/36 per layer and
    a 4-layer net does not leave chance level under SGD; 6 makes the linear-region gain 1, as
    for hard_tanh at 1), 1 otherwise."""
    activation = canonical_name(activation, ACTIVATIONS)
    if activation in ("relu", "relu6"):
        return math.sqrt(2.0)
    return 6.0 if activation == "hard_sigmoid" else 1.0


def _shape(input_shape: int | Sequence[int]) -> tuple[int, ...]:
    shape = (input_shape,) if isinstance(input_shape, int) else tuple(input_shape)
    if not shape or any(not isinstance(s, int) or isinstance(s, bool) or s < 1 for s in shape):
        raise ValueError(f"input_shape must be a positive int or a sequence of positive ints; "
                         f"got {input_shape!r}")
    return shape


def _positive_int(name: str, value: object, minimum: int = 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return value


@torch.no_grad()
def _init_linear(layer: nn.Linear, init: str, sigma_w: float, sigma_b: float,
                 gen: torch.Generator | None) -> None:
    fan_out, fan_in = layer.weight.shape
    if init == "gaussian":
        layer.weight.normal_(0.0, sigma_w / math.sqrt(fan_in), generator=gen)
    else:  # orthonormal rows/columns, entries of variance sigma_w^2 / fan_in on average
        nn.init.orthogonal_(layer.weight, gain=sigma_w * math.sqrt(max(fan_in, fan_out) / fan_in),
                            generator=gen)
    if layer.bias is not None:
        if sigma_b > 0:
            layer.bias.normal_(0.0, sigma_b, generator=gen)
        else:
            layer.bias.zero_()


def mlp(
    input_shape: int | Sequence[int],
    num_classes: int,
    *,
    width: int = 512,
    depth: int = 2,
    activation: str = "relu",
    init: str = "gaussian",
    sigma_w: float | None = None,
    sigma_b: float = 0.0,
    bias: bool = True,
    seed: int | torch.Generator | None = None,
    dropout: float = 0.0,
) -> nn.Sequential:
    """Fully connected net: Flatten, ``depth`` hidden layers of ``width`` units with
    ``activation``, then a linear read-out to ``num_classes`` logits. ``dropout = p > 0``
    puts ``nn.Dropout(p)`` after every hidden activation (identity in eval mode); ``p = 0``
    adds no module, so the layers and their state_dict keys are those of a net without it.

    Every Linear layer (read-out included) gets ``W ~ N(0, sigma_w^2 / fan_in)``
    (``init="gaussian"``) or ``W = sigma_w sqrt(max(fan_in, fan_out) / fan_in) Q`` with Q
    having orthonormal rows or columns (``init="orthogonal"``; square layers are exactly
    ``sigma_w`` times an orthogonal matrix), and ``b ~ N(0, sigma_b^2)``. ``sigma_w=None``
    uses ``default_sigma_w(activation)``. ``depth=0`` is a linear (softmax-regression) model.
    """
    shape = _shape(input_shape)
    num_classes = _positive_int("num_classes", num_classes)
    width = _positive_int("width", width)
    depth = _positive_int("depth", depth, minimum=0)
    activation = canonical_name(activation, ACTIVATIONS)
    check_choice("init", init, INITS)
    sigma_w = default_sigma_w(activation) if sigma_w is None else float(sigma_w)
    sigma_b = float(sigma_b)
    dropout = _dropout_p(dropout)
    if not (math.isfinite(sigma_w) and sigma_w > 0):
        raise ValueError(f"sigma_w must be a finite number > 0; got {sigma_w!r}")
    if not (math.isfinite(sigma_b) and sigma_b >= 0):
        raise ValueError(f"sigma_b must be a finite number >= 0; got {sigma_b!r}")
    gen = torch_generator(seed, allow_none=True)
    layers: list[nn.Module] = [nn.Flatten()]
    fan_in = math.prod(shape)
    for _ in range(depth):
        lin = skip_init(nn.Linear, fan_in, width, bias=bias)
        _init_linear(lin, init, sigma_w, sigma_b, gen)
        layers += [lin, make_activation(activation)]
        if dropout:
            layers.append(nn.Dropout(dropout))
        fan_in = width
    head = skip_init(nn.Linear, fan_in, num_classes, bias=bias)
    _init_linear(head, init, sigma_w, sigma_b, gen)
    layers.append(head)
    return nn.Sequential(*layers)


def small_cnn(
    input_shape: Sequence[int] = (3, 32, 32),
    num_classes: int = 10,
    *,
    channels: Sequence[int] = (32, 64),
    activation: str = "relu",
    seed: int | None = None,
    dropout: float = 0.0,
) -> nn.Sequential:
    """Conv(3x3, pad 1) + activation + MaxPool(2) per entry of ``channels``, then Flatten and a
    Linear head. Input (C, H, W), e.g. (1, 28, 28), (3, 32, 32), (3, 24, 24). PyTorch's default
    initialisation, drawn under ``seed`` (global RNG state is left untouched). ``dropout =
    p > 0`` puts ``nn.Dropout(p)`` between Flatten and the head (identity in eval mode); ``p =
    0`` adds no module."""
    shape = _shape(input_shape)
    if len(shape) != 3:
        raise ValueError(f"input_shape must be (C, H, W) for small_cnn; got {input_shape!r}")
    num_classes = _positive_int("num_classes", num_classes)
    chans = [_positive_int("channels", c) for c in channels]
    if not chans:
        raise ValueError("channels must name at least one conv block, e.g. (32, 64)")
    activation = canonical_name(activation, ACTIVATIONS)
    dropout = _dropout_p(dropout)
    c, h, w = shape
    if h >> len(chans) < 1 or w >> len(chans) < 1:
        raise ValueError(f"input_shape {shape} is too small for {len(chans)} pooling blocks")
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(int(seed))
        layers: list[nn.Module] = []
        for out in chans:
            layers += [nn.Conv2d(c, out, 3, padding=1), make_activation(activation),
                       nn.MaxPool2d(2)]
            c, h, w = out, h // 2, w // 2
        layers.append(nn.Flatten())
        if dropout:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(c * h * w, num_classes))
        return nn.Sequential(*layers)


def _dropout_p(p: object) -> float:
    if not isinstance(p, (int, float)) or isinstance(p, bool) or not 0 <= p < 1:
        raise ValueError(f"dropout must be a number in [0, 1); got {p!r}")
    return float(p)


_BUILDERS = {"mlp": mlp, "cnn": small_cnn, "resnet": resnet}
_SPEC_KEYS = {
    "mlp": {"width", "depth", "activation", "init", "sigma_w", "sigma_b", "bias", "seed",
            "dropout"},
    "cnn": {"channels", "activation", "seed", "dropout"},
    "resnet": {"depth", "width", "shortcut", "seed"},
}


def build_model(spec: Mapping[str, Any]) -> nn.Module:
    """Build from ``{"kind": "mlp"|"cnn"|"resnet", "input_shape": [...], "num_classes": k,
    **kwargs}`` where kwargs are those of ``mlp`` / ``small_cnn`` / ``resnet``."""
    if not isinstance(spec, Mapping):
        raise TypeError(f"spec must be a dict; got {type(spec).__name__}")
    kind = spec.get("kind")
    check_choice("spec['kind']", kind, tuple(_BUILDERS))
    for required in ("input_shape", "num_classes"):
        if required not in spec:
            raise ValueError(f"spec is missing {required!r} (needed for kind={kind!r})")
    extra = set(spec) - {"kind", "input_shape", "num_classes"} - _SPEC_KEYS[kind]
    if extra:
        raise ValueError(f"spec has unknown keys {sorted(extra)} for kind={kind!r}; accepted: "
                         f"{', '.join(sorted(_SPEC_KEYS[kind]))}")
    kwargs = {k: v for k, v in spec.items() if k in _SPEC_KEYS[kind]}
    if "channels" in kwargs:
        kwargs["channels"] = tuple(kwargs["channels"])
    shape = spec["input_shape"]
    shape = shape if isinstance(shape, int) else tuple(shape)
    return _BUILDERS[kind](shape, spec["num_classes"], **kwargs)


def _json_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    try:
        return json.loads(json.dumps(dict(spec)))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"spec must be JSON-serialisable (plain numbers, strings, lists); "
                         f"{exc}") from None


def save_checkpoint(path: str | os.PathLike, model: nn.Module, spec: Mapping[str, Any]) -> Path:
    """Write ``{"format", "version", "spec", "state_dict"}`` with ``torch.save`` (atomically).

    The spec must rebuild ``model``: its weights are checked against ``build_model(spec)``.
    """
    spec = _json_spec(spec)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    _check_match(build_model(spec), state, "model")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "spec": spec,
               "state_dict": state}
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(payload, fh)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _listed(names: Sequence[str], shown: int = 4) -> str:
    """``"a, b, c, d (+8 more)"``: the first ``shown`` names and how many are left out."""
    head = ", ".join(names[:shown])
    return head + (f" (+{len(names) - shown} more)" if len(names) > shown else "")


def state_dict_mismatch(own: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor], *,
                        own_name: str = "model", state_name: str = "weights") -> str | None:
    """What keeps ``state`` from loading into a module whose state_dict is ``own``: the
    missing keys, the unexpected keys and the shape mismatches (``name: model (16, 64) vs
    weights (8, 64)``), each listed by its first four entries and a count; None when they fit.
    """
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: {own_name} {tuple(own[k].shape)} vs {state_name} {tuple(state[k].shape)}"
              for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]

    def count(n: int, what: str) -> str:
        return f"{n} {what}{'' if n == 1 else 'es' if what.endswith('h') else 's'}"

    parts = []
    if missing:
        parts.append(f"{count(len(missing), 'missing key')} ({_listed(missing)})")
    if unexpected:
        parts.append(f"{count(len(unexpected), 'unexpected key')} ({_listed(unexpected)})")
    if shapes:
        parts.append(f"{count(len(shapes), 'shape mismatch')} ({_listed(shapes)})")
    return "; ".join(parts) if parts else None


def _check_match(model: nn.Module, state: Mapping[str, torch.Tensor], what: str) -> None:
    problem = state_dict_mismatch(model.state_dict(), state, own_name="spec", state_name=what)
    if problem is not None:
        raise ValueError(f"spec does not match the {what}'s weights: {problem}")


def _missing_class(exc: BaseException) -> str | None:
    """What of a pickled model's code cannot be found (module or class), or None."""
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        return f"code needs module {exc.name!r}, which cannot be imported ({exc})"
    match = re.match(r"Can't get attribute '([^']+)' on <module '([^']+)'", str(exc))
    if isinstance(exc, AttributeError) and match:
        cls, module = match.groups()
        where = (" (the script that saved it; move the class into a module)"
                 if module == "__main__" else "")
        return f"class {cls!r} is not defined in module {module!r}{where}"
    return None


def load_checkpoint(path: str | os.PathLike, *, trust: bool = False,
                    map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Read a jacspec checkpoint; returns ``(model in eval mode, spec)``.

    Uses ``torch.load(weights_only=True)``; ``trust=True`` allows arbitrary unpickling (only for
    files you trust), and then also accepts a whole pickled ``nn.Module`` (spec
    ``{"kind": "module", "class": ...}``). Every failure is a ValueError (or FileNotFoundError).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist (or is not a file)")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=not trust)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if not trust and ("Unsupported global" in text or "allowed global" in text
                          or "Unsupported class" in text):
            raise ValueError(f"checkpoint {str(path)!r} needs arbitrary code to be unpickled; "
                             "jacspec loads weights only. If you trust the file, pass trust=True "
                             "(CLI: --trust)") from None
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        detail = next((ln for ln in lines if ln.startswith("Unsupported")),
                      lines[0] if lines else "unpickling failed")
        raise ValueError(f"checkpoint {str(path)!r} is corrupt or not a torch file ({detail})"
                         ) from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, AttributeError,
            ImportError, IndexError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        missing = _missing_class(exc) if trust else None
        if missing is not None:
            raise ValueError(f"checkpoint {str(path)!r} pickles a whole model whose {missing}; "
                             "make it importable (run jacspec from the folder that holds the "
                             "module, or add that folder to PYTHONPATH), or save a state_dict "
                             "and load it with package.module:factory --weights FILE") from None
        raise ValueError(f"checkpoint {str(path)!r} is corrupt or not a torch file ({first})"
                         ) from None
    if trust and isinstance(obj, nn.Module):
        return obj.eval(), {"kind": "module", "class": type(obj).__qualname__}
    if not isinstance(obj, Mapping) or obj.get("format") != CHECKPOINT_FORMAT:
        hint = ""
        if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor)
                                                     for v in obj.values()):
            hint = f" (it looks like a bare state_dict; {WEIGHTS_HINT})"
        elif isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
            hint = f" (it looks like a PyTorch Lightning checkpoint; {WEIGHTS_HINT})"
        raise ValueError(f"{str(path)!r} is not a jacspec checkpoint: expected a dict with "
                         f"format={CHECKPOINT_FORMAT!r}, 'spec' and 'state_dict'{hint}")
    version = obj.get("version")
    if version != CHECKPOINT_VERSION:
        raise ValueError(f"checkpoint {str(path)!r} has version {version!r}; this jacspec reads "
                         f"version {CHECKPOINT_VERSION}")
    spec, state = obj.get("spec"), obj.get("state_dict")
    if not isinstance(spec, Mapping) or not isinstance(state, Mapping):
        raise ValueError(f"checkpoint {str(path)!r} is corrupt: 'spec' and 'state_dict' must be "
                         "dicts")
    try:
        model = build_model(spec)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"checkpoint {str(path)!r} has an invalid spec: {exc}") from None
    try:
        _check_match(model, state, "checkpoint")
    except ValueError as exc:
        raise ValueError(f"checkpoint {str(path)!r}: {exc}") from None
    model.load_state_dict(state, strict=True)
    return model.eval(), dict(spec)
