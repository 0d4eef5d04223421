"""``JacobianOptions``: how the Jacobian engine runs, declared once for every entry point.

Every function that computes Jacobians (``iter_jacobians``, ``jacobians``,
``data_jacobian``, ``iter_layer_jacobians``, ``gram``, ``esd``, ``estimate_esd``,
``analyze``, ``jacobian_norms`` ...) takes ``options=JacobianOptions(...)`` or the same
fields as keywords, and passes the options on whole. :func:`resolve_options` is the one
place keywords become options; the options validate themselves once, when made.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from jacspec._util.validation import check_choice

OUTPUTS = ("softmax", "logits", "log_softmax")
METHODS = ("auto", "replicate", "batched_grad", "loop")
#: How input->output rows are computed: ``"direct"`` (``d g / d x``), ``"factored"``
#: (through the first linear layer, :mod:`jacspec.jacobian.factored`) or ``"auto"``.
ROUTES = ("auto", "direct", "factored")
#: Output projections of a sketch (:mod:`jacspec.jacobian.sketch`); ``sketch="auto"`` sketches
#: ``k >= AUTO_SKETCH_MIN_K`` outputs with ``AUTO_SKETCH_R`` projections.
SKETCH_KINDS = ("orthonormal", "rademacher")
AUTO_SKETCH_MIN_K = 200
AUTO_SKETCH_R = 64
DEFAULT_METHOD = "auto"
#: The computation dtypes jacspec takes, by name (the CLI's --dtype choices too).
DTYPES = {"float32": torch.float32, "float64": torch.float64}

#: The option fields, in declaration order.
FIELDS = ("output", "dtype", "device", "batch_size", "method", "check_independence", "progress",
          "route", "sketch", "sketch_kind", "sketch_seed", "input_module", "output_key",
          "position")


def _check_dtype(name: str, value: Any) -> torch.dtype | None:
    if value is None:
        return None
    if isinstance(value, str) and value.replace("torch.", "") in DTYPES:
        return DTYPES[value.replace("torch.", "")]
    if value in (torch.float32, torch.float64):
        return value
    raise ValueError(f"{name} must be torch.float32, torch.float64 or None; got {value!r}")


def _check_device(name: str, value: Any) -> torch.device | None:
    if value is None:
        return None
    if not isinstance(value, (str, torch.device)):
        raise TypeError(f"{name} must be a torch.device, a string such as 'cpu' or None; "
                        f"got {type(value).__name__}")
    try:
        return torch.device(value)
    except (RuntimeError, ValueError):
        raise ValueError(f"{name}={value!r} is not a device; expected for example 'cpu', "
                         "'cuda' or 'cuda:0'") from None


def check_device_available(device: torch.device | str, name: str = "device") -> torch.device:
    """``device`` as a :class:`torch.device` when this machine has it, else one ValueError
    naming ``name``: CUDA needs ``torch.cuda.is_available()`` and an index below the device
    count, MPS ``torch.backends.mps.is_available()``; the CPU is always there."""
    dev = _check_device(name, device)
    assert dev is not None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"{name}={str(device)!r} was requested but CUDA is not available "
                             "here; use 'cpu'")
        if dev.index is not None and dev.index >= count:
            raise ValueError(f"{name}={str(device)!r}: this machine has {count} CUDA "
                             f"device{'s' if count > 1 else ''} (cuda:0 to cuda:{count - 1})")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{name}={str(device)!r} was requested but MPS is not available "
                         "here; use 'cpu'")
    return dev


def _check_batch_size(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer or None; got {value!r}")
    return int(value)


def _check_flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False; got {value!r}")
    return value


def _check_sketch(name: str, value: Any) -> int | str | None:
    """None/0: no sketch; ``"auto"``; or a positive number of projections."""
    if value is None or value == "auto":
        return value
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a positive integer (output projections), 'auto' or "
                         f"None/0 (no sketch); got {value!r}")
    return None if value == 0 else int(value)


def _check_seed(name: str, value: Any) -> int | None:
    """None (the caller's ``seed``, 0 where it has none) or a non-negative integer."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer or None; got {value!r}")
    return int(value)


def _check_name(name: str, value: Any, what: str) -> str | None:
    """None or a non-empty string (a module name, an output key)."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise TypeError(f"{name} must be {what} (a non-empty string) or None; got {value!r}")
    return value.strip()


def _check_position(name: str, value: Any) -> int | None:
    """None or an integer (a sequence position; negative counts from the last real token)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer sequence position (e.g. -1 for the last "
                        f"token) or None; got {value!r}")
    return int(value)


def _validated(values: Mapping[str, Any], labels: Mapping[str, str]) -> dict[str, Any]:
    """The option fields checked and normalised; errors name ``labels[field]``."""
    name = {f: labels.get(f, f) for f in FIELDS}
    return {
        "output": check_choice(name["output"], values["output"], OUTPUTS),
        "dtype": _check_dtype(name["dtype"], values["dtype"]),
        "device": _check_device(name["device"], values["device"]),
        "batch_size": _check_batch_size(name["batch_size"], values["batch_size"]),
        "method": check_choice(name["method"], values["method"], METHODS),
        "check_independence": _check_flag(
            name["check_independence"], values["check_independence"]
        ),
        "progress": _check_flag(name["progress"], values["progress"]),
        "route": check_choice(name["route"], values["route"], ROUTES),
        "sketch": _check_sketch(name["sketch"], values["sketch"]),
        "sketch_kind": check_choice(name["sketch_kind"], values["sketch_kind"], SKETCH_KINDS),
        "sketch_seed": _check_seed(name["sketch_seed"], values["sketch_seed"]),
        "input_module": _check_name(name["input_module"], values["input_module"],
                                    "a module name such as 'bert.embeddings'"),
        "output_key": _check_name(name["output_key"], values["output_key"],
                                  "the key of the model's output to take, such as 'logits'"),
        "position": _check_position(name["position"], values["position"]),
    }


@dataclass(frozen=True)
class JacobianOptions:
    """How per-example Jacobians are computed (validated once, when made).

    - ``output``: the map ``g`` of the logits differentiated: ``"softmax"``, ``"logits"``
      or ``"log_softmax"``;
    - ``dtype``: ``torch.float32``/``torch.float64`` (or their names); None: the model's;
    - ``device``: where the model runs (a converted copy if it differs); None: the model's;
    - ``batch_size``: examples per backward pass; None: chosen from a 64 MiB budget;
    - ``method``: the batched backward (``"auto"``, ``"replicate"``, ``"batched_grad"``,
      ``"loop"``; the ``jacobian_method`` keyword of ``gram``/``esd``/``analyze``);
    - ``check_independence``: probe the first batch for layers that mix examples;
    - ``progress``: a progress bar over the examples;
    - ``route``: input->output rows ``"direct"`` (``J_i = d g / d x``), ``"factored"``
      (``A_i L`` with ``J_i = A_i W`` through the first linear layer, ``L L^T = W W^T``:
      :mod:`jacspec.jacobian.factored`) or ``"auto"`` (factored when it applies and the
      layer is narrower than the input);
    - ``sketch``: input->output rows sketched with ``r`` shared random output projections
      (an unbiased estimate of ``M`` at ``r/k`` of the backward passes,
      :mod:`jacspec.jacobian.sketch`); ``"auto"``: ``r = 64`` when ``k >= 200``; None/0:
      exact; ``sketch_kind`` (``"rademacher"``, default, or ``"orthonormal"``), ``sketch_seed``
      (the projections' seed; None: the entry point's ``seed`` where it has one, e.g.
      :func:`jacspec.analyze`'s, else 0).
    - ``input_module``: a submodule's name (``"bert.embeddings"``, ``"transformer.wte"``,
      ``"embed"``): the Jacobian is taken with respect to that module's output ``h`` per
      example, everything before it run as given (:mod:`jacspec.jacobian.input_module`);
      ``d`` is then ``seq_len x hidden``. None: with respect to the input itself.
    - ``output_key``: the logits in a dict/dataclass/``ModelOutput`` output (None:
      ``logits``; a tuple's first element);
    - ``position``: for per-position logits ``(b, seq_len, k)`` (a language model), the
      position differentiated, counted over each example's real (unmasked) tokens
      (``-1``: the last one).
    """

    output: str = "softmax"
    dtype: torch.dtype | None = None
    device: torch.device | None = None
    batch_size: int | None = None
    method: str = DEFAULT_METHOD
    check_independence: bool = True
    progress: bool = False
    route: str = "auto"
    sketch: int | str | None = None
    sketch_kind: str = "rademacher"
    sketch_seed: int | None = None
    input_module: str | None = None
    output_key: str | None = None
    position: int | None = None

    def __post_init__(self) -> None:
        values = _validated({f: getattr(self, f) for f in FIELDS}, {})
        for key, value in values.items():
            object.__setattr__(self, key, value)

    def replace(self, **changes: Any) -> JacobianOptions:
        """A copy with ``changes`` applied (validated again)."""
        unknown = [k for k in changes if k not in FIELDS]
        if unknown:
            raise TypeError(
                f"JacobianOptions has no field {unknown[0]!r}; its fields are {', '.join(FIELDS)}"
            )
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe fields (dtype as ``"float32"``/``"float64"``, device as a string)."""
        out = {f: getattr(self, f) for f in FIELDS}
        out["dtype"] = None if self.dtype is None else str(self.dtype).replace("torch.", "")
        out["device"] = None if self.device is None else str(self.device)
        return out


def resolve_options(
    options: JacobianOptions | None = None,
    *,
    labels: Mapping[str, str] | None = None,
    **fields: Any,
) -> JacobianOptions:
    """The one place keywords become options: ``options`` (default ``JacobianOptions()``)
    with every field given here and not None put in.

    ``labels`` maps a field to the keyword the caller's users typed, so errors name it
    (``{"method": "jacobian_method"}``). ``jacobian_method`` is accepted everywhere as the
    spelling of the field ``method`` (the batched backward), since :func:`jacspec.analyze`
    and :func:`jacspec.estimate_esd` have a ``method`` of their own (exact, auto, slq).
    """
    if options is not None and not isinstance(options, JacobianOptions):
        raise TypeError(
            f"options must be a JacobianOptions or None; got {type(options).__name__}"
        )
    if "jacobian_method" in fields:
        alias = fields.pop("jacobian_method")
        if fields.get("method") is not None and alias is not None:
            raise TypeError("give the batched backward once: jacobian_method= or method=")
        if alias is not None:
            fields["method"] = alias
            labels = {"method": "jacobian_method", **(labels or {})}
    unknown = [k for k in fields if k not in FIELDS]
    if unknown:
        raise TypeError(
            f"unknown Jacobian option {unknown[0]!r}; the options are {', '.join(FIELDS)}"
        )
    base = options if options is not None else JacobianOptions()
    given = {k: v for k, v in fields.items() if v is not None}
    if not given:
        return base
    merged = {f: getattr(base, f) for f in FIELDS} | given
    _validated(merged, labels or {})  # errors name the caller's keyword
    return dataclasses.replace(base, **given)
