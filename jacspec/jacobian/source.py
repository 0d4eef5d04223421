"""``JacobianSource``: re-iterable batches of rows of the data Jacobian ``𝒥``.

A source says what its rows are before any is computed: ``n`` examples (None when the data
cannot tell without a pass), ``k`` rows of ``input_shape`` (``d`` entries) per example, the
``dtype`` they were computed in, whether they sum to zero over the ``k`` rows (softmax
outputs: ``sum_c d p_c / dx = 0``), the ``target`` (which tensor is differentiated with
respect to which) and the :class:`~jacspec.jacobian.options.JacobianOptions` used.
Iterating it yields :class:`~jacspec.jacobian.engine.JacobianBatch` objects, ``jac`` of
shape ``(b, k, *input_shape)``; every iteration is a fresh pass.

Made from a model and data (``"input->output"``, ``"input->LAYER"``, ``"LAYER->output"``),
from an array (``(n, k, *input_shape)`` or ``(n, kd)``), from an ``.npy`` file of rows
(:func:`jacspec.spectra.operators.write_jacobian_memmap`, :meth:`JacobianSource.to_file`),
and :meth:`~JacobianSource.cached` (float64 rows kept in memory after the first pass). The
Gram (:func:`jacspec.spectra.gram.gram_from_source`), the Gram operator
(:func:`jacspec.spectra.operators.gram_operator`) and the randomized null of
:func:`jacspec.analyze` take a source.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from jacspec._util.names import MAIN
from jacspec.data.batches import OneShot, data_length, first_batch, require_reiterable
from jacspec.jacobian.engine import (
    JacobianBatch,
    check_inputs,
    jacobian_batches,
    model_dtype_device,
    num_outputs,
    prepare_model,
    unwrap_compiled,
)
from jacspec.jacobian.factored import factored_rows
from jacspec.jacobian.input_module import at_input_module
from jacspec.jacobian.layers import eager_model, iter_layer_jacobians, select_layers
from jacspec.jacobian.options import JacobianOptions, resolve_options
from jacspec.jacobian.sketch_rows import (
    check_r,
    class_sum_complement,
    iter_sketched_jacobians,
    resolve_sketch,
    sketch_projections,
)

__all__ = ["CachedSource", "JacobianSource", "SketchSource", "class_sum_complement",
           "parse_target", "write_rows"]

logger = logging.getLogger(__name__)

_FLOATS = (torch.float32, torch.float64)


def parse_target(target: str) -> tuple[str, str | None]:
    """``"input->output"`` -> ``("main", None)``; ``"input->L"`` -> ``("input_to_layer", "L")``;
    ``"L->output"`` -> ``("layer_to_output", "L")``; anything else: ValueError."""
    parts = target.split("->") if isinstance(target, str) else []
    if len(parts) == 2 and all(p.strip() for p in parts):
        a, b = (p.strip() for p in parts)
        if (a, b) == ("input", "output"):
            return "main", None
        if a == "input":
            return "input_to_layer", b
        if b == "output":
            return "layer_to_output", a
    raise ValueError(
        f"target={target!r} is not supported; expected 'input->output', 'input->LAYER' or "
        "'LAYER->output' with LAYER a module name"
    )


class JacobianSource:
    """Re-iterable batches of rows of ``𝒥`` and what they are (see the module docstring).

    Attributes: ``n`` (None if unknown), ``k``, ``input_shape``, ``d``, ``dtype`` (a torch
    dtype), ``rows_sum_to_zero``, ``target``, ``output`` (the map differentiated:
    ``"softmax"``, ``"logits"``, ``"log_softmax"``, ``"layer"``), ``options`` (None for
    arrays and files), ``kind`` (``"model"``, ``"array"``, ``"file"``, ``"cached"``) and
    ``settings`` (JSON-able).
    """

    def __init__(
        self,
        make_batches: Callable[[], Iterable[JacobianBatch]],
        *,
        n: int | None,
        k: int,
        input_shape: tuple[int, ...],
        dtype: torch.dtype,
        rows_sum_to_zero: bool,
        target: str = MAIN,
        output: str = "softmax",
        options: JacobianOptions | None = None,
        kind: str = "model",
        route: str = "direct",
        jacobian_shape: tuple[int, ...] | None = None,
        route_info: dict[str, Any] | None = None,
        info: dict[str, Any] | None = None,
    ) -> None:
        self._make = make_batches
        self.n = None if n is None else int(n)
        self.k = int(k)
        self.input_shape = tuple(int(s) for s in input_shape)
        self.dtype = dtype
        self.rows_sum_to_zero = bool(rows_sum_to_zero)
        self.target = target
        self.output = output
        self.options = options
        self.kind = kind
        #: ``"direct"``: rows are ``J_i``; ``"factored"``: rows ``A_i L`` with the same Gram
        #: (:mod:`jacspec.jacobian.factored`), ``d`` then is the first layer's width.
        self.route = route
        #: The input shape of ``𝒥`` itself (``input_shape`` unless the rows are factored).
        self.jacobian_shape = self.input_shape if jacobian_shape is None else tuple(
            int(s) for s in jacobian_shape
        )
        self.route_info = dict(route_info or {})
        #: Further settings of the rows (a sketch's ``{"sketch": {...}}``), kept by caches.
        self.info = dict(info or {})

    @property
    def d(self) -> int:
        """Entries per row: the product of ``input_shape``."""
        return int(np.prod(self.input_shape)) if self.input_shape else 1

    @property
    def cols(self) -> int:
        """Columns of ``𝒥``: ``k * d``."""
        return self.k * self.d

    @property
    def settings(self) -> dict[str, Any]:
        """What the source is, JSON-able."""
        return {
            "kind": self.kind,
            "target": self.target,
            "n": self.n,
            "k": self.k,
            "d": self.d,
            "input_shape": list(self.input_shape),
            "dtype": str(self.dtype).replace("torch.", ""),
            "output": self.output,
            "rows_sum_to_zero": self.rows_sum_to_zero,
            "options": None if self.options is None else self.options.to_dict(),
            "route": self.route,
            **({"jacobian_shape": list(self.jacobian_shape)}
               if self.jacobian_shape != self.input_shape else {}),
            **self.route_info,
            **self.info,
        }

    def __iter__(self) -> Iterator[JacobianBatch]:
        return iter(self._make())

    def rows(self) -> Iterator[torch.Tensor]:
        """One pass of row blocks ``(b, k*d)``."""
        for b in self:
            yield b.rows

    def count(self) -> int:
        """``n``, with one pass over the rows when it is not known."""
        if self.n is None:
            self.n = sum(int(b.jac.shape[0]) for b in self)
        return self.n

    def cached(self, max_bytes: int | None = None) -> CachedSource:
        """This source with its rows kept in memory as float64 after the first full pass
        (up to ``max_bytes``; beyond it the cache is dropped with a warning and every pass
        recomputes the rows)."""
        return CachedSource(self, max_bytes=max_bytes)

    def to_file(self, path: str | os.PathLike, *, dtype: Any = None) -> JacobianSource:
        """Write the rows to a 2-D ``.npy`` file (and ``PATH.json`` with ``k``,
        ``input_shape``, ``rows_sum_to_zero``, ``output``, ``target``); return the file's
        source. ``dtype``: the file's (default: the source's)."""
        path = Path(path)
        dt = np.dtype(str(dtype or self.dtype).replace("torch.", ""))
        write_rows(self, path, dtype=dt)
        meta = {key: self.settings[key] for key in
                ("k", "input_shape", "rows_sum_to_zero", "output", "target", "dtype")}
        Path(f"{path}.json").write_text(json.dumps(meta, indent=1))
        return JacobianSource.from_file(path)

    def __repr__(self) -> str:
        return (
            f"JacobianSource({self.kind}, target={self.target!r}, n={self.n}, k={self.k}, "
            f"input_shape={self.input_shape}, dtype={str(self.dtype).replace('torch.', '')}, "
            f"rows_sum_to_zero={self.rows_sum_to_zero})"
        )

    # ------------------------------------------------------------------ constructors

    @classmethod
    def from_model(
        cls,
        model: nn.Module,
        data: Any,
        options: JacobianOptions | None = None,
        *,
        target: str = MAIN,
        **fields: Any,
    ) -> JacobianSource:
        """Rows of ``target`` for ``model`` on ``data`` (``options`` or its fields as
        keywords). ``"input->output"``: ``d g(f(x)) / dx`` (``k`` classes); ``"input->L"``:
        ``d h / dx`` with ``h`` module ``L``'s output (``k`` = its width m); ``"L->output"``:
        ``d g / d h`` (``input_shape`` = ``h``'s). One probe forward pass reads the sizes."""
        opts = resolve_options(options, **fields)
        kind, layer = parse_target(target)
        model, data, opts = at_input_module(model, data, opts)
        if isinstance(data, Iterator):  # a generator: one pass, the first batch kept
            data = OneShot(data, "this JacobianSource")
            x0, _ = first_batch([data.peek()])
        else:
            x0, _ = first_batch(data)
        check_inputs(x0)
        n = data_length(data)
        run_dtype = opts.dtype or model_dtype_device(unwrap_compiled(model))[0] or torch.float32
        if kind == "main":
            k = num_outputs(model, x0[:2])
            shape = tuple(int(s) for s in x0.shape[1:])
            zero = opts.output == "softmax"
            r = None if opts.sketch is None else resolve_sketch(opts.sketch, k,
                                                                 rows_sum_to_zero=zero)
            if r is not None:
                require_reiterable(data, "a sketched JacobianSource")
                return SketchSource.of(model, data, opts, r=r, k=k, n=n, input_shape=shape,
                                       dtype=run_dtype, target=target)
            opts = opts.replace(sketch=None)  # "auto" below the threshold: exact rows
            fac = None if opts.route == "direct" else factored_rows(model, data, opts, x0=x0)
            if fac is not None:
                return cls(fac.make, n=n, k=k, input_shape=(fac.layer.w,), dtype=fac.dtype,
                           rows_sum_to_zero=zero, target=target, output=opts.output,
                           options=opts, kind="factored", route="factored",
                           jacobian_shape=shape, route_info=fac.route_info)

            def make() -> Iterable[JacobianBatch]:
                return jacobian_batches(model, data, opts)

            return cls(make, n=n, k=k, input_shape=shape, dtype=run_dtype,
                       rows_sum_to_zero=zero, target=target, output=opts.output,
                       options=opts)
        if opts.sketch is not None:  # sketching applies to input->output rows only
            opts = opts.replace(sketch=None)
        run_model, dt, dev = prepare_model(eager_model(model), opts.dtype, opts.device)
        (hidden,), _ = select_layers(run_model, x0.to(device=dev, dtype=dt), [layer])
        assert layer is not None

        def make_layer() -> Iterable[JacobianBatch]:
            return iter_layer_jacobians(model, data, layer, direction=kind, options=opts)

        if kind == "input_to_layer":
            return cls(make_layer, n=n, k=hidden.width, input_shape=tuple(x0.shape[1:]),
                       dtype=dt, rows_sum_to_zero=False, target=target, output="layer",
                       options=opts)
        k = num_outputs(run_model, x0[:2].to(device=dev, dtype=dt))
        return cls(make_layer, n=n, k=k, input_shape=hidden.shape, dtype=dt,
                   rows_sum_to_zero=opts.output == "softmax", target=target,
                   output=opts.output, options=opts)

    @classmethod
    def from_array(
        cls,
        J: torch.Tensor | np.ndarray,
        *,
        k: int | None = None,
        input_shape: tuple[int, ...] | None = None,
        rows_sum_to_zero: bool | None = None,
        output: str = "logits",
        target: str = MAIN,
        batch_size: int = 4096,
    ) -> JacobianSource:
        """Rows held in memory: ``J`` of shape ``(n, k, *input_shape)``, or ``(n, kd)`` with
        ``k`` (default 1) or ``input_shape`` given. ``rows_sum_to_zero`` defaults to
        ``output == "softmax"``; numpy arrays are shared, not copied."""
        arr = torch.from_numpy(np.asarray(J)) if isinstance(J, np.ndarray) else J
        if not isinstance(arr, torch.Tensor):
            raise TypeError(f"J must be a torch.Tensor or numpy array; got {type(J).__name__}")
        if arr.dtype not in _FLOATS:
            raise TypeError(f"J must be float32 or float64; got {arr.dtype}")
        if arr.ndim < 2 or arr.shape[0] < 1:
            raise ValueError(
                f"J must have shape (n, kd) or (n, k, *input_shape) with n >= 1; got "
                f"{tuple(arr.shape)}"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}")
        n = int(arr.shape[0])
        kk, shape = _row_shape(tuple(int(s) for s in arr.shape[1:]), k, input_shape, "J")
        arr = arr.detach().reshape(n, kk, *shape)

        def make() -> Iterator[JacobianBatch]:
            for s in range(0, n, batch_size):
                yield JacobianBatch(jac=arr[s : s + batch_size], x=None, y=None, out=None,
                                    start=s)

        zero = output == "softmax" if rows_sum_to_zero is None else bool(rows_sum_to_zero)
        return cls(make, n=n, k=kk, input_shape=shape, dtype=arr.dtype, rows_sum_to_zero=zero,
                   target=target, output=output, kind="array")

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike,
        *,
        k: int | None = None,
        input_shape: tuple[int, ...] | None = None,
        rows_sum_to_zero: bool | None = None,
        output: str | None = None,
        batch_size: int = 1024,
    ) -> JacobianSource:
        """Rows in a 2-D ``.npy`` file ``(n, kd)`` (written by
        :func:`jacspec.spectra.operators.write_jacobian_memmap` or :meth:`to_file`), read
        ``batch_size`` rows at a time through a read-only memmap. ``k``, ``input_shape``,
        ``rows_sum_to_zero`` and ``output`` default to ``PATH.json`` when it exists (as
        :meth:`to_file` writes it), else to ``k=1``, ``output="logits"``."""
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"Jacobian file {str(path)!r} does not exist")
        try:
            mm = np.load(path, mmap_mode="r")
        except ValueError as exc:
            raise ValueError(f"{str(path)!r} is not a .npy file of Jacobian rows: {exc}") from None
        if mm.ndim != 2 or mm.dtype not in (np.float32, np.float64):
            raise ValueError(
                f"Jacobian file {str(path)!r} must hold a 2-D float32/float64 array (n, kd); "
                f"got shape {mm.shape}, dtype {mm.dtype}"
            )
        meta: dict[str, Any] = {}
        side = Path(f"{path}.json")
        if side.is_file():
            meta = json.loads(side.read_text())
        k = k if k is not None or input_shape is not None else meta.get("k")
        if input_shape is None and meta.get("input_shape") is not None and k == meta.get("k"):
            input_shape = tuple(meta["input_shape"])
        out = output or meta.get("output", "logits")
        if rows_sum_to_zero is None:
            rows_sum_to_zero = bool(meta.get("rows_sum_to_zero", out == "softmax"))
        n = int(mm.shape[0])
        kk, shape = _row_shape((int(mm.shape[1]),), k, input_shape, str(path))
        del mm
        if batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}")

        def make() -> Iterator[JacobianBatch]:
            arr = np.load(path, mmap_mode="r")
            for s in range(0, n, batch_size):
                block = torch.from_numpy(np.array(arr[s : s + batch_size]))
                yield JacobianBatch(jac=block.reshape(-1, kk, *shape), x=None, y=None,
                                    out=None, start=s)

        dtype = torch.float64 if np.load(path, mmap_mode="r").dtype == np.float64 else (
            torch.float32
        )
        return cls(make, n=n, k=kk, input_shape=shape, dtype=dtype,
                   rows_sum_to_zero=rows_sum_to_zero, target=meta.get("target", MAIN),
                   output=out, kind="file")


class SketchSource(JacobianSource):
    """A :class:`JacobianSource` of sketched rows (kind ``"sketch"``): ``k = r`` rows
    ``S_i = V J_i`` per example whose Gram is an unbiased estimate of ``M``
    (:mod:`jacspec.jacobian.sketch`). ``settings`` adds ``sketch``: ``r``, ``kind``,
    ``seed``, the model's ``k`` (``k_full``), ``deflated`` (projections in the class-sum-zero
    basis) and ``backward_fraction`` (``r/k``)."""

    def __init__(self, make: Callable[[], Any], *, projections: torch.Tensor, r: int,
                 kind: str, seed: int, k_full: int, deflated: bool, **kw: Any) -> None:
        info = {"sketch": {"r": r, "kind": kind, "seed": seed, "k_full": k_full,
                           "deflated": deflated, "shared": True,
                           "backward_fraction": r / k_full}}
        super().__init__(make, k=r, rows_sum_to_zero=False, kind="sketch", info=info, **kw)
        self.projections = projections
        self.k_full = k_full

    @classmethod
    def of(cls, model: nn.Module, data: Any, opts: JacobianOptions, *, r: int, k: int,
           n: int | None, input_shape: tuple[int, ...], dtype: torch.dtype,
           target: str) -> SketchSource:
        """The ``r`` sketched rows of ``model``'s ``k`` outputs (projections drawn from
        ``opts.sketch_kind``/``opts.sketch_seed``, a seed left None being 0)."""
        seed = 0 if opts.sketch_seed is None else int(opts.sketch_seed)
        opts = opts.replace(sketch=r, sketch_seed=seed)
        zero = opts.output == "softmax"
        r = check_r(r, k, zero)
        v = sketch_projections(k, r, kind=opts.sketch_kind, seed=seed, rows_sum_to_zero=zero)

        def make() -> Iterator[JacobianBatch]:
            return iter_sketched_jacobians(model, data, v, options=opts)

        return cls(make, projections=v, r=r, kind=opts.sketch_kind, seed=seed, k_full=k,
                   deflated=zero, n=n, input_shape=input_shape, dtype=dtype, target=target,
                   output=opts.output, options=opts)


def _row_shape(
    tail: tuple[int, ...], k: int | None, input_shape: tuple[int, ...] | None, what: str
) -> tuple[int, tuple[int, ...]]:
    """``(k, input_shape)`` of rows whose per-example shape is ``tail``."""
    if len(tail) >= 2 and k is None and input_shape is None:
        return tail[0], tail[1:]
    total = int(np.prod(tail))
    if input_shape is not None:
        shape = tuple(int(s) for s in input_shape)
        d = int(np.prod(shape)) if shape else 1
        kk = total // d if d else 0
        if k is not None and int(k) != kk or kk * d != total:
            raise ValueError(
                f"{what} has {total} entries per example, which is not k={k} x input_shape "
                f"{shape}"
            )
        return kk, shape
    kk = 1 if k is None else int(k)
    if kk < 1 or total % kk:
        raise ValueError(f"{what} has {total} entries per example, not a multiple of k={k}")
    return kk, (total // kk,)


_HEADER_BYTES = 256  # fixed .npy header length, so the shape can be rewritten at the end


def _npy_header(shape: tuple[int, int], dtype: np.dtype) -> bytes:
    """A version-1.0 .npy header padded to exactly ``_HEADER_BYTES`` bytes."""
    d = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
    text = repr(d)
    pad = _HEADER_BYTES - 10 - len(text) - 1
    if pad < 0:
        raise ValueError(f"shape {shape} is too long for the .npy header.")
    header = (text + " " * pad + "\n").encode("latin1")
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header


def numpy_rows(block: Any) -> np.ndarray:
    """One batch (JacobianBatch, tensor or array ``(b, ...)``) as a ``(b, kd)`` numpy array."""
    if hasattr(block, "jac") and not isinstance(block, (np.ndarray, torch.Tensor)):
        block = block.jac
    if isinstance(block, torch.Tensor):
        block = block.detach().cpu().numpy()
    if not isinstance(block, np.ndarray):
        raise TypeError(
            "Jacobian batches must be torch Tensors, numpy arrays or JacobianBatch objects, "
            f"got {type(block).__name__}."
        )
    if block.ndim < 2:
        raise ValueError(
            f"a Jacobian batch must have shape (b, kd) or (b, k, *input_shape), got {block.shape}."
        )
    return block.reshape(block.shape[0], -1)


def write_rows(batches: Iterable[Any], path: str | os.PathLike, *, dtype: Any) -> tuple[int, int]:
    """Stream batches as the rows of ``𝒥`` into a 2-D ``.npy`` file (one batch in memory at a
    time: header written last); return ``(n, kd)``."""
    dt = np.dtype(dtype)
    n = 0
    kd: int | None = None
    with open(path, "wb") as f:
        f.write(b"\0" * _HEADER_BYTES)
        for batch in batches:
            block = numpy_rows(batch)
            if kd is None:
                kd = int(block.shape[1])
            elif block.shape[1] != kd:
                raise ValueError(f"batch has {block.shape[1]} columns, earlier batches had {kd}.")
            f.write(np.ascontiguousarray(block, dtype=dt).tobytes())
            n += int(block.shape[0])
        if kd is None or n == 0:
            raise ValueError("batches is empty; nothing to write.")
        f.seek(0)
        f.write(_npy_header((n, kd), dt))
    return n, kd


class CachedSource(JacobianSource):
    """A source whose rows are kept in memory (float64, CPU) after the first full pass.

    ``dtype`` stays the dtype the rows were computed in (their precision), though cached
    batches are float64. ``held``: whether the rows are in memory; :meth:`array` returns
    them as an ``(n, kd)`` float64 array (None while not held).
    """

    def __init__(self, source: JacobianSource, *, max_bytes: int | None = None) -> None:
        super().__init__(
            source._make, n=source.n, k=source.k, input_shape=source.input_shape,
            dtype=source.dtype, rows_sum_to_zero=source.rows_sum_to_zero,
            target=source.target, output=source.output, options=source.options,
            kind="cached", route=source.route, jacobian_shape=source.jacobian_shape,
            route_info=source.route_info, info=source.info,
        )
        self.source = source
        self.max_bytes = max_bytes
        self._held: list[JacobianBatch] | None = None
        self._too_big = False

    @property
    def held(self) -> bool:
        return self._held is not None

    def __iter__(self) -> Iterator[JacobianBatch]:
        if self._held is not None:
            yield from self._held
            return
        store: list[JacobianBatch] | None = None if self._too_big else []
        used = 0
        for b in self.source:
            if store is not None:
                jac = b.jac.detach().to("cpu", torch.float64)
                used += jac.numel() * 8
                if self.max_bytes is not None and used > self.max_bytes:
                    logger.warning("cached source: %s exceeds max_bytes=%d; not kept",
                                   self.target, self.max_bytes)
                    store, self._too_big = None, True
                else:
                    store.append(JacobianBatch(jac=jac, x=None, y=b.y, out=b.out, start=b.start))
            yield b
        if store is not None:
            self._held = store
            self.n = sum(int(b.jac.shape[0]) for b in store)

    def array(self) -> np.ndarray | None:
        """The held rows ``(n, kd)`` in float64, or None while they are not held."""
        if self._held is None:
            return None
        return torch.cat([b.rows for b in self._held]).numpy()
