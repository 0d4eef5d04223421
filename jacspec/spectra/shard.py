"""The dual Gram sharded over examples, on Ray workers or shard after shard in this process.

The dual Gram is a sum over examples, ``𝒥^T𝒥 = sum_i J_i^T J_i``, so the data can be cut
into ``S`` contiguous shards (by example index), each shard's partial dual Gram computed on
its own worker (float64, in the class-sum-zero basis for softmax outputs, exactly as
:func:`jacspec.spectra.gram.gram_from_source` does), and the parts summed in shard order
(:func:`jacspec.spectra.gram.sum_grams`: a fixed order, so the result is deterministic).
The result is the same :class:`~jacspec.spectra.gram.Gram` the local :func:`~jacspec.gram`
returns, equal to it up to the order of float64 additions (about 1e-15 relative).

Memory: each worker holds one ``cols x cols`` float64 matrix (``cols = (k-1)d`` for softmax,
``kd`` otherwise) plus one batch of rows; the driver holds the running sum and one incoming
part. The primal side ``𝒥𝒥^T`` (``n x n``) is not a sum over examples and is refused: for
``n < cols`` use :func:`jacspec.gram` with ``side="primal"`` on one machine.

Data that can be split by index: a tensor or array, an ``(x, y)`` pair, a jacspec
``DataSet``, a map-style ``torch.utils.data.Dataset`` (split into ``Subset`` ranges), a list
of batches (split between batches) and a ``DataLoader`` over a map-style dataset that reads
it in order (``shuffle=False``, no custom sampler, ``drop_last=False``: split into loaders
over ``Subset`` ranges with the same ``batch_size``, ``collate_fn`` and ``num_workers``).
Text data (``input_module=``, :mod:`jacspec.jacobian.input_module`) is cut the same way: a
list of dict batches (between batches), a dict of whole columns (``{"input_ids": (n, L),
...}``, by rows), a list of per-example dicts (by rows) or a loader with a collate function;
every shard lays ``h`` out on the whole data's first sequence length, so the parts have one
width. Generators, iterable-style datasets and shuffled loaders are refused (TypeError).

Models shipped to Ray workers: eager ``nn.Module`` objects (pickled by Ray: their classes
must be importable on the workers, or defined in ``__main__``) and TorchScript modules (sent
as ``torch.jit.save`` bytes). An exported program's module (``torch.export``) cannot be
pickled: use ``backend="local"`` or the eager model.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, SequentialSampler, Subset

from jacspec._util.ray import RAY_START_TIMEOUT, ray_session
from jacspec._util.validation import check_choice
from jacspec.data.batches import Y_KEYS, in_memory_pair
from jacspec.data.model_inputs import is_row
from jacspec.jacobian.engine import unwrap_compiled
from jacspec.jacobian.input_module import at_input_module
from jacspec.jacobian.options import JacobianOptions, resolve_options
from jacspec.jacobian.source import JacobianSource
from jacspec.spectra.exact import ESD, SCALES, esd_from_gram
from jacspec.spectra.gram import Gram, check_fits, gram_from_source, sum_grams

logger = logging.getLogger(__name__)

__all__ = ["BACKENDS", "shard_ranges", "shard_data", "sharded_esd", "sharded_gram"]

BACKENDS = ("ray", "local")
_HINT = "use backend='local'"


def shard_ranges(n: int, shards: int) -> list[tuple[int, int]]:
    """``shards`` contiguous ``[start, stop)`` ranges covering ``0..n-1``, sizes differing by at
    most one (the first ``n % shards`` one longer), in order."""
    _check_shards(shards)
    if shards > n:
        raise ValueError(f"shards={shards} exceeds the {n} examples of data; use at most {n}")
    base, extra = divmod(n, shards)
    out, start = [], 0
    for s in range(shards):
        stop = start + base + (1 if s < extra else 0)
        out.append((start, stop))
        start = stop
    return out


def _check_shards(shards: Any) -> None:
    if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
        raise ValueError(f"shards must be a positive integer; got {shards!r}")


def _refuse(data: Any, why: str) -> TypeError:
    return TypeError(
        f"data of type {type(data).__name__} cannot be sharded ({why}); the sharded Gram splits "
        "data by index: pass a tensor or array, an (x, y) tuple, a DataSet, a map-style "
        "Dataset, a list of batches, or a DataLoader over a map-style Dataset with "
        "shuffle=False"
    )


def shard_data(data: Any, shards: int) -> list[tuple[Any, int, int]]:
    """``data`` cut into ``shards`` contiguous pieces: ``[(piece, start, stop), ...]`` with
    ``start:stop`` the examples' indices (see the module docstring for what can be cut).

    A list of batches is cut between batches (about equal numbers of batches per shard)."""
    _check_shards(shards)
    if isinstance(data, (torch.Tensor, np.ndarray)):
        return [(data[a:b], a, b) for a, b in shard_ranges(int(data.shape[0]), shards)]
    if hasattr(data, "x") and hasattr(data, "y") and not isinstance(data, (tuple, list)):
        x, y = data.x, data.y
        return [((x[a:b], y[a:b]), a, b) for a, b in shard_ranges(int(x.shape[0]), shards)]
    pair = in_memory_pair(data)
    if pair is not None:
        x, y = pair
        return [((x[a:b], None if y is None else y[a:b]), a, b)
                for a, b in shard_ranges(int(x.shape[0]), shards)]
    if isinstance(data, DataLoader):
        ds = data.dataset
        if isinstance(ds, IterableDataset) or not hasattr(ds, "__len__"):
            raise _refuse(data, "its dataset is iterable-style, without indices")
        if not isinstance(data.sampler, SequentialSampler) or data.batch_size is None \
                or data.drop_last:
            raise _refuse(data, "it does not read its dataset in order: shuffled, a custom "
                          "sampler or batch_sampler, or drop_last=True")
        return [(DataLoader(Subset(ds, range(a, b)), batch_size=data.batch_size,
                            collate_fn=data.collate_fn, num_workers=data.num_workers), a, b)
                for a, b in shard_ranges(len(ds), shards)]
    if isinstance(data, Dataset):
        if isinstance(data, IterableDataset) or not hasattr(data, "__len__"):
            raise _refuse(data, "it is iterable-style, without indices")
        return [(Subset(data, range(a, b)), a, b) for a, b in shard_ranges(len(data), shards)]
    if isinstance(data, Mapping):  # whole columns {"input_ids": (n, L), "labels": (n,)}
        cols = {k: v for k, v in data.items() if isinstance(v, (torch.Tensor, np.ndarray))}
        n = next((int(v.shape[0]) for k, v in cols.items() if k not in Y_KEYS and v.ndim),
                 None)
        if n is None:
            raise _refuse(data, "it holds no tensor or array column")
        return [({k: v[a:b] if k in cols else v for k, v in data.items()}, a, b)
                for a, b in shard_ranges(n, shards)]
    if isinstance(data, list) and data and isinstance(data[0], Mapping) and is_row(data[0]):
        return [(data[a:b], a, b) for a, b in shard_ranges(len(data), shards)]  # rows
    if isinstance(data, list) and data:
        sizes = [_batch_len(item) for item in data]
        if shards > len(data):
            raise ValueError(f"shards={shards} exceeds the {len(data)} batches of data; use at "
                             f"most {len(data)} (a list of batches is split between batches)")
        starts = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        out = []
        for a, b in shard_ranges(len(data), shards):
            out.append((data[a:b], int(starts[a]), int(starts[b])))
        return out
    raise _refuse(data, "it has no indices" if data is not None else "it is None")


def _batch_len(item: Any) -> int:
    x = item[0] if isinstance(item, (tuple, list)) and item else item
    if isinstance(item, Mapping):  # x-like keys first, else the first column (input_ids)
        x = next((item[k] for k in ("x", "input", "inputs", "image", "images") if k in item),
                 next((v for k, v in item.items() if k not in Y_KEYS and hasattr(v, "shape")),
                      None))
    if not hasattr(x, "shape") or not len(x.shape):
        raise TypeError(f"data is a list whose items are not (x, y) batches or x batches; got "
                        f"an item of type {type(item).__name__}")
    return int(x.shape[0])


# ------------------------------------------------------------------------- the shard task


def _pack_model(model: nn.Module) -> Any:
    """What is sent to the workers: the eager module (Ray pickles it) or, for TorchScript,
    ``("torchscript", bytes)`` from ``torch.jit.save``."""
    model = unwrap_compiled(model)
    if isinstance(model, torch.jit.ScriptModule):
        buf = io.BytesIO()
        torch.jit.save(model, buf)
        return ("torchscript", buf.getvalue())
    return model


def _unpack_model(packed: Any) -> nn.Module:
    if isinstance(packed, tuple) and len(packed) == 2 and packed[0] == "torchscript":
        return torch.jit.load(io.BytesIO(packed[1]), map_location="cpu")
    return packed


def shard_gram_task(
    packed_model: Any,
    data: Any,
    options: JacobianOptions,
    deflate: bool,
    max_memory: int | None,
    threads: int | None = None,
    length: int | None = None,
) -> Gram:
    """One shard's partial dual Gram (what a worker runs): :func:`gram_from_source` with
    ``side="dual"`` on the rows of the shard's examples. ``threads``: torch's intra-op
    threads for the task (None: unchanged). ``length``: with ``options.input_module``, the
    sequence length of the whole data's first batch, so every shard's rows have its width."""
    if threads is not None:
        torch.set_num_threads(int(threads))
    model = _unpack_model(packed_model)
    model, data, options = at_input_module(model, data, options, length=length)
    source = JacobianSource.from_model(model, data, options)
    return gram_from_source(source, side="dual", max_memory=max_memory, deflate=deflate)


# ------------------------------------------------------------------------- entry points


def sharded_gram(
    model: nn.Module,
    data: Any,
    *,
    shards: int,
    backend: str = "ray",
    options: JacobianOptions | None = None,
    ray_address: str | None = None,
    ray_timeout: float = RAY_START_TIMEOUT,
    cpus_per_shard: int = 1,
    max_memory: int | None = None,
    deflate: bool = True,
    side: str = "dual",
    **fields: Any,
) -> Gram:
    """The unscaled dual Gram ``𝒥^T𝒥 = sum_s sum_{i in shard s} J_i^T J_i`` of ``model`` on
    ``data``, from ``shards`` contiguous shards summed in shard order (module docstring).

    ``backend="ray"``: one Ray task per shard (``cpus_per_shard`` CPUs and torch threads
    each), on the cluster at ``ray_address`` or on a Ray already initialised in this process,
    else on a local Ray started within ``ray_timeout`` seconds (and shut down after).
    ``backend="local"``: the same task, shard after shard, in this process (no Ray).
    ``options`` or its fields as keywords (``output``, ``dtype``, ``device``, ``batch_size``,
    ``method``) as for :func:`jacspec.gram`; ``deflate``, ``max_memory`` (checked here for the
    sum, and on each worker for its part) too. ``side`` must be ``"dual"`` (or ``"auto"``,
    which means dual here): the primal ``𝒥𝒥^T`` is not a sum over examples (ValueError).
    Settings record ``shards`` (count, backend, ranges) next to what :func:`jacspec.gram`
    records.
    """
    check_choice("backend", backend, BACKENDS)
    check_choice("side", side, ("auto", "dual", "primal"))
    if side == "primal":
        raise ValueError(
            "side='primal' cannot be sharded: the primal Gram JJ^T (n x n) is not a sum over "
            "examples; use jacspec.gram(model, data, side='primal') on one machine, or "
            "side='dual'"
        )
    _check_shards(shards)
    if isinstance(cpus_per_shard, bool) or not isinstance(cpus_per_shard, int) \
            or cpus_per_shard < 1:
        raise ValueError(f"cpus_per_shard must be a positive integer; got {cpus_per_shard!r}")
    opts = resolve_options(options, **fields)
    # the whole data's source, on the driver: validates model and data (one probe forward
    # pass) before any shipping, and gives the settings the local gram records
    whole = JacobianSource.from_model(model, data, opts)
    pieces = shard_data(data, shards)
    cols = whole.cols if not (deflate and whole.rows_sum_to_zero and whole.k > 1) \
        else (whole.k - 1) * whole.d
    # the driver holds the running sum, one incoming part and later the eigensolver's copy
    check_fits("dual", cols, cols, 8, max_memory)
    packed = _pack_model(model)
    deflate = bool(deflate)
    # at an input module every shard lays h out on the whole data's sequence length
    length = whole.input_shape[0] if opts.input_module and len(whole.input_shape) > 1 else None
    if backend == "local":
        parts = (shard_gram_task(packed, piece, opts, deflate, max_memory, None, length)
                 for piece, _, _ in pieces)
        g = sum_grams(parts)
    else:
        g = _run_on_ray(packed, pieces, opts, deflate, max_memory, ray_address, ray_timeout,
                        cpus_per_shard, length)
    if whole.n is not None and g.n != whole.n:
        raise RuntimeError(f"the shards held {g.n} examples but data has {whole.n}")
    info = {"count": len(pieces), "backend": backend,
            "ranges": [[a, b] for _, a, b in pieces]}
    if backend == "ray":
        info["address"] = ray_address
        info["cpus_per_shard"] = cpus_per_shard
    src = {**whole.settings, "n": g.n}
    logger.info("sharded gram: %d shards on %s, n=%d dim=%d", len(pieces), backend, g.n,
                g.matrix.shape[0])
    return replace(g, settings={**g.settings, "source": src, "jacobian_method": opts.method,
                                "jacobian": opts.to_dict(), "shards": info})


def _run_on_ray(
    packed: Any,
    pieces: Sequence[tuple[Any, int, int]],
    opts: JacobianOptions,
    deflate: bool,
    max_memory: int | None,
    address: str | None,
    timeout: float,
    cpus: int,
    length: int | None = None,
) -> Gram:
    """One Ray task per shard; parts fetched and added one at a time, in shard order."""
    gpus = 1 if opts.device is not None and opts.device.type == "cuda" else 0
    with ray_session(address, timeout, hint=_HINT) as ray:
        try:
            model_ref = ray.put(packed)
        except Exception as exc:  # noqa: BLE001 - pickling errors have many types
            raise TypeError(
                f"the model ({type(packed).__name__}) cannot be sent to Ray workers: "
                f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}; eager modules "
                "and TorchScript modules can; for an exported program use backend='local'"
            ) from None
        task = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=0)(shard_gram_task)
        refs = [task.remote(model_ref, ray.put(piece), opts, deflate, max_memory, cpus, length)
                for piece, _, _ in pieces]

        def parts():
            for s, ref in enumerate(refs):
                try:
                    part = ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - one sentence naming the shard
                    cause = getattr(exc, "cause", None) or exc
                    _, a, b = pieces[s]
                    first = str(cause).strip().splitlines()
                    kind = type(cause) if isinstance(cause, (ValueError, TypeError)) \
                        else RuntimeError
                    why = first[0] if first else type(cause).__name__
                    if "No module named" in why:
                        why += ("; the model's class must be importable on the Ray workers "
                                "(an installed module, or __main__)")
                    raise kind(f"shard {s} (examples {a}:{b}) failed on a Ray worker: "
                               f"{why}") from None
                refs[s] = None  # release the object store's copy once added
                yield part

        return sum_grams(parts())


def sharded_esd(
    model: nn.Module,
    data: Any,
    *,
    shards: int,
    scale: str = "n",
    **kwargs: Any,
) -> ESD:
    """The exact ESD (eigenvalues of ``M/n`` or ``M``, float64) from :func:`sharded_gram`
    (its keywords: ``backend``, ``options`` or option fields, ``ray_address`` ...); the
    eigensolve runs on the driver."""
    check_choice("scale", scale, SCALES)
    g = sharded_gram(model, data, shards=shards, **kwargs)
    e = esd_from_gram(g, scale=scale)
    keep = {key: g.settings[key] for key in ("jacobian_method", "jacobian", "shards")}
    return replace(e, settings={**e.settings, **keep})
