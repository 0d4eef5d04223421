"""Arguments shared by the sub-commands: a model, a data set, dtype, JSON and figure output.

Output convention of every command (stated in each ``--help`` and the README):
``--json PATH`` writes one JSON file (``-``: stdout, which then carries nothing else);
``--plot DIR`` writes every figure of the command into the folder DIR (created if missing)
under fixed names; every written file is printed as ``wrote PATH``, one line each, on
stdout (on stderr when ``--json -`` holds stdout). Tables print numbers with 4
significant digits.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np
from torch import nn

from jacspec._util.json import dumps
from jacspec._util.json import write_json as _write_json_file
from jacspec.jacobian.options import DTYPES as DTYPES  # its one home, used by commands

#: Help texts of options that several commands share, so each reads the same everywhere.
SEED_HELP = "random seed (default 0)"
BATCH_SIZE_HELP = "examples per Jacobian batch (default: chosen from memory)"
DTYPE_HELP = "computation dtype (float64 resolves smaller eigenvalues)"
OUTPUT_HELP = "the output whose Jacobian is measured (default softmax)"
DEVICE_HELP = ("where the Jacobians are computed: cpu, cuda, cuda:N or mps (default: where "
               "the model's weights are, the CPU for a loaded file)")
NO_PROGRESS_HELP = "no progress bar"
LAYERS_HELP = "'all' or comma-separated module names: add layer-wise Jacobian rows"


class DeprecatedAlias(argparse.Action):
    """A hidden old spelling of an option: stores into the new option's ``dest`` and prints
    one line on stderr naming the new spelling."""

    def __init__(self, option_strings: list[str], dest: str, *, new: str, **kwargs: Any) -> None:
        self.new = new
        super().__init__(option_strings, dest, help=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        print(f"{parser.prog}: {option_string} is deprecated; use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_deprecated_alias(parser: Any, old: str, new: argparse.Action) -> None:
    """Accept ``old`` (hidden from ``--help``) as a deprecated spelling of the option ``new``."""
    parser.add_argument(old, dest=new.dest, action=DeprecatedAlias, new=new.option_strings[0],
                        type=new.type, choices=new.choices, metavar=new.metavar,
                        default=argparse.SUPPRESS)


def add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model",
        metavar="MODEL",
        help="TorchScript file, torch.export program (exported with a dynamic batch: "
        "dynamic_shapes={'x': {0: torch.export.Dim('batch')}}), jacspec checkpoint, or "
        "package.module:factory, optionally with literal arguments: "
        "'package.module:factory(10, width=64)'; the module is imported from the working "
        "folder first (as python -m does)",
    )
    parser.add_argument("--weights", help="state_dict file for a package.module:factory MODEL")
    parser.add_argument(
        "--trust",
        action="store_true",
        help="allow unpickling code from MODEL/--weights (only for files you trust)",
    )


def add_data_args(parser: argparse.ArgumentParser, *, default_split: str = "train") -> None:
    parser.add_argument(
        "--data",
        required=True,
        metavar="NAME|FILE",
        help="digits, mnist1d, mnist5k, gaussian, mnist, fashion_mnist, cifar10, cifar100, or a "
        ".npz file with arrays x and y (or x_train and y_train; x_test and y_test for --split "
        "test); "
        "a .npz's x reaches the model in the shape it was stored in, uint8 pixels scaled to "
        "[0, 1]",
    )
    parser.add_argument("--data-root", metavar="DIR", help="folder holding MNIST/CIFAR files")
    parser.add_argument("--split", choices=["train", "test"], default=default_split,
                        help=f"which split of --data (default {default_split})")
    parser.add_argument("--n", type=int, default=None, metavar="N",
                        help="use a seeded subset of N examples (default: all)")
    parser.add_argument("--crop", type=int, default=None, help="centre crop images to CROP x CROP")
    shape = parser.add_mutually_exclusive_group()
    shape.add_argument(
        "--flatten",
        action="store_const",
        const=True,
        dest="flatten",
        help="reshape each example to a flat vector (d,), for an MLP: (n, H, W) -> (n, H*W)",
    )
    shape.add_argument(
        "--channel",
        action="store_const",
        const=False,
        dest="flatten",
        help="add a size-1 channel axis to examples of one or two dims, for a CNN: "
        "(n, H, W) -> (n, 1, H, W), (n, d) -> (n, 1, d); (C, H, W) images are kept",
    )
    parser.add_argument(
        "--channels-last",
        action="store_true",
        help="read a .npz of channels-last images (n, H, W, C) as (n, C, H, W), the layout "
        "of torch's Conv2d (the last axis moved to position 1, before --crop/--flatten)",
    )
    parser.add_argument("--seed", type=int, default=0,
                        help="random seed of the --n subset and of estimates (default 0)")


def add_jacobian_args(parser: argparse.ArgumentParser, *, dtype: bool = True) -> None:
    """``--dtype`` (unless ``dtype=False``), ``--batch-size`` and ``--device``: how every
    command that computes Jacobians computes them (:func:`jacobian_fields` reads them)."""
    if dtype:
        parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32",
                            help=DTYPE_HELP)
    parser.add_argument("--batch-size", type=int, default=None, help=BATCH_SIZE_HELP)
    parser.add_argument("--device", default=None, metavar="DEVICE", help=DEVICE_HELP)


def jacobian_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The JacobianOptions fields of :func:`add_jacobian_args`' options (``dtype`` only when
    the command has ``--dtype``), checked before any work: a device that is not a device, or
    that this machine does not have, is one ValueError naming ``--device``."""
    from jacspec.jacobian.options import check_device_available, resolve_options

    fields: dict[str, Any] = {"batch_size": getattr(args, "batch_size", None),
                              "device": getattr(args, "device", None)}
    if hasattr(args, "dtype"):
        fields["dtype"] = DTYPES[args.dtype]
    resolve_options(labels={"batch_size": "--batch-size", "device": "--device",
                            "dtype": "--dtype"}, **fields)
    if fields["device"] is not None:
        fields["device"] = check_device_available(fields["device"], "--device")
    return fields


def add_input_module_args(parser: argparse.ArgumentParser) -> None:
    """``--input-module``, ``--output-key``, ``--position``: the Jacobian at a submodule's
    output (text and sequence models) and where the logits are in the model's output."""
    parser.add_argument(
        "--input-module", metavar="NAME", default=None,
        help="differentiate with respect to this submodule's output (e.g. bert.embeddings, "
        "transformer.wte, embed) instead of the input; needed for token ids",
    )
    parser.add_argument("--output-key", metavar="KEY", default=None,
                        help="the logits' key in a dict/ModelOutput output (default logits)")
    parser.add_argument("--position", type=int, default=None, metavar="P",
                        help="for per-position logits (a language model): the position, "
                        "counted over real tokens (-1: the last)")


def input_module_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The JacobianOptions fields of :func:`add_input_module_args`' options."""
    return {"input_module": getattr(args, "input_module", None),
            "output_key": getattr(args, "output_key", None),
            "position": getattr(args, "position", None)}


def token_ids(args: argparse.Namespace, data: Any) -> Any:
    """With ``--input-module`` and a ``.npz`` whose ``x`` holds integers (token ids, not
    uint8 pixels): ``(x as int64, y)`` of the loaded data (which holds them as float32,
    exact below 2^24), so an embedding receives ids; otherwise ``data`` unchanged."""
    import numpy as np

    if getattr(args, "input_module", None) is None or not str(args.data).endswith(".npz"):
        return data
    with np.load(args.data) as arrays:
        key = next((k for k in ("x", f"x_{getattr(args, 'split', 'train')}", "x_train")
                    if k in arrays), "x")
        kind = arrays[key].dtype if key in arrays else None
    if kind is None or kind.kind not in "iu" or kind == np.uint8:
        return data
    return data.x.long(), data.y


def load_model_from_args(args: argparse.Namespace) -> nn.Module:
    """:func:`jacspec.load_model` of MODEL/--weights/--trust; its warning that a factory's
    weights are random is printed as one line on stderr (``jacspec CMD: warning: ...``)."""
    import warnings

    from jacspec.models.loading import RandomWeightsWarning, load_model

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RandomWeightsWarning)
        model = load_model(args.model, weights=args.weights, trust=args.trust)
    for w in caught:
        if issubclass(w.category, RandomWeightsWarning):
            print(f"jacspec {getattr(args, 'command', '')}: warning: {w.message}",
                  file=sys.stderr)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return model


def load_data_from_args(
    args: argparse.Namespace, *, split: str | None = None, subset: bool = True
) -> Any:
    """The data set of :func:`add_data_args`'s options (``split`` overrides ``--split``;
    ``subset=False`` ignores ``--n``), shaped by ``--channels-last`` and
    ``--flatten``/``--channel``."""
    from jacspec.data.datasets import load_dataset

    return load_dataset(
        args.data,
        args.split if split is None else split,
        root=args.data_root,
        crop=args.crop,
        n=args.n if subset else None,
        seed=args.seed,
        flatten=getattr(args, "flatten", None),
        channels_last=getattr(args, "channels_last", False),
    )


def looks_channels_last(shape: tuple[int, ...]) -> bool:
    """True for an example shape (H, W, C) with C in {1, 3, 4} smaller than H and W."""
    return len(shape) == 3 and shape[2] in (1, 3, 4) and shape[2] < min(shape[:2])


def data_shape_hint(args: argparse.Namespace, message: str) -> str:
    """``message`` plus what ``--flatten``/``--channel``/``--channels-last`` would change, when
    it is the engine's refusal of the data's input shape (``"the model rejected inputs of
    shape (...)"``) on a command that took :func:`add_data_args`; otherwise ``message``
    unchanged."""
    import re

    found = re.search(r"rejected inputs of shape \(([\d, ]*)\)", message)
    if found is None or not hasattr(args, "data"):
        return message
    shape = tuple(int(s) for s in found.group(1).split(",") if s.strip())
    ndim = len(shape)
    flatten = getattr(args, "flatten", None)
    channels_last = getattr(args, "channels_last", False)
    if flatten:
        hint = ("--flatten made each example a flat vector: drop it to keep the stored shape, "
                "or pass --channel for a channel axis")
    elif not channels_last and looks_channels_last(shape):
        h, w, c = shape
        hint = (f"the examples look channels-last (H, W, C) = {shape}: pass --channels-last to "
                f"read them as (C, H, W) = {(c, h, w)} for a Conv2d, or --flatten for a model "
                "that takes flat vectors")
    elif channels_last:
        hint = ("--channels-last moved the last axis first ((H, W, C) -> (C, H, W)): drop it "
                "to keep the stored shape, or pass --flatten for flat vectors")
    elif flatten is not None:
        hint = ("--channel added a channel axis: drop it to keep the stored shape, or pass "
                "--flatten for flat vectors")
    elif ndim == 1:
        hint = ("the examples are flat vectors as stored: pass --channel for a model that "
                "wants (1, d), or store images as (n, H, W) for one that takes images")
    elif ndim == 2:
        hint = ("the examples are used as stored: pass --channel for a model that wants a "
                "channel axis ((H, W) -> (1, H, W)), or --flatten for one that takes flat "
                "vectors (H*W,)")
    else:
        hint = ("the examples are used as stored: pass --flatten for a model that takes flat "
                "vectors")
    return f"{message.rstrip('.; ')}; {hint}"


def to_json(payload: dict[str, Any]) -> str:
    """JSON text of ``payload`` through the one conversion (:func:`jacspec._util.json.jsonable`:
    numpy/torch values converted, NaN/Inf written as null)."""
    return dumps(payload, indent=2)


def write_json(payload: dict[str, Any], path: str | None) -> Path | None:
    """Write ``payload`` to the file ``path`` and print ``wrote PATH`` on stdout; ``-``: the
    JSON text to stdout; None: nothing. Returns the written file (None for ``-``/None)."""
    if path is None:
        return None
    if path == "-":
        print(to_json(payload))
        return None
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"--json {path!r} is a folder; --json takes a file path (or - for stdout)")
    _write_json_file(payload, p, indent=2)
    print(f"wrote {p}")
    return p


JSON_HELP = "write the results as JSON to the file PATH ('-': stdout, then nothing else)"
FIGURE_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg", ".eps", ".ps", ".tif", ".tiff")


def plot_help(names: str) -> str:
    """``--plot DIR`` help text naming the fixed figure files."""
    return f"write every figure into the folder DIR (created if missing): {names}; " \
        "each written path is printed"


def check_plot_dir(path: str | None) -> Path | None:
    """Check a ``--plot DIR`` value before any work: a folder (existing or not), not a file."""
    if path is None:
        return None
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ValueError(f"--plot {path!r} is a file; --plot takes a folder DIR and writes "
                         "the figures into it")
    if not p.exists() and p.suffix.lower() in FIGURE_SUFFIXES:
        raise ValueError(f"--plot {path!r} looks like a file name; --plot takes a folder DIR "
                         f"and writes the figures into it under fixed names (e.g. --plot "
                         f"{p.with_suffix('')})")
    return p


def info_stream(json_path: str | None) -> IO[str]:
    """Where tables and ``wrote`` lines go: stdout, or stderr when ``--json -`` holds it."""
    return sys.stderr if json_path == "-" else sys.stdout


def save_figures(figures: Mapping[str, Any], folder: str | Path, *,
                 json_path: str | None = None, dpi: int = 120) -> list[Path]:
    """Save each ``{file name: Figure}`` into ``folder`` and print ``wrote PATH`` per file."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, fig in figures.items():
        path = out / name
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
        written.append(path)
    announce(written, json_path)
    return written


def announce(paths: Iterable[str | Path], json_path: str | None = None) -> None:
    """Print ``wrote PATH`` for each written file (see :func:`info_stream`)."""
    stream = info_stream(json_path)
    for path in paths:
        print(f"wrote {path}", file=stream)


def format_value(value: Any) -> str:
    """A table cell: floats with 4 significant digits (``{:.4g}``), the rest as ``str``."""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.4g}"
    return str(value)


def format_table(frame: Any) -> str:
    """``frame.to_string()`` with every number in significant digits (:func:`format_value`)."""
    return frame.map(format_value).to_string()


def format_mapping(values: Mapping[str, Any]) -> str:
    """``key  value`` lines (scalars only; lists summarised by length) for a CLI table."""
    rows = []
    for key, value in values.items():
        if isinstance(value, (list, tuple, np.ndarray)):
            if len(value) and all(isinstance(v, dict) for v in value):
                text = "; ".join(", ".join(f"{k}={format_value(v)}" for k, v in d.items())
                                 for d in value)
            else:
                text = f"[{len(value)} values]"
        elif isinstance(value, dict):
            continue
        else:
            text = format_value(value)
        rows.append((str(key), text))
    width = max((len(k) for k, _ in rows), default=0)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
