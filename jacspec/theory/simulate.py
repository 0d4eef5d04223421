"""Simulated random networks and the empirical spectrum of ``J J^T``.

Net of width N and depth L: ``h^l = W^l x^{l-1} + b^l``, ``x^l = phi(h^l)``, with
``W^l_ij ~ N(0, sigma_w^2 / N)`` or ``sigma_w`` times a Haar orthogonal matrix and
``b^l_i ~ N(0, sigma_b^2)``. The input is ``x^0 = phi(h^0)``, ``h^0_i ~ N(0, q*)``, so every
layer sits at the fixed point (``q^0 = q*``). ``J = D^L W^L ... D^1 W^1`` (N x N,
float64) and the spectrum of ``JJ^T`` is the squared singular values of J, pooled over
inputs and network instances.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from jacspec._util.json import jsonable
from jacspec._util.progress import progress_bar
from jacspec._util.random import torch_generator
from jacspec._util.validation import check_choice, positive_int
from jacspec.theory.activations import Activation, get_activation
from jacspec.theory.freeprob import WEIGHTS, JacobianSpectrum
from jacspec.theory.meanfield import q_star

_EPS = float(np.finfo(np.float64).eps)


def haar_orthogonal(n: int, generator: torch.Generator) -> torch.Tensor:
    """Haar-distributed n x n orthogonal matrix (QR of a Gaussian with sign fix), float64."""
    a = torch.randn(n, n, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(a)
    return q * torch.sign(torch.diagonal(r)).unsqueeze(0)


@dataclass(frozen=True)
class RandomNetwork:
    """Weights and biases of one random network (float64 torch)."""

    activation: Activation = field(repr=False)
    weights: tuple = field(repr=False)
    biases: tuple = field(repr=False)

    @property
    def depth(self) -> int:
        return len(self.weights)

    def jacobian(self, x0: torch.Tensor) -> torch.Tensor:
        """``J = D^L W^L ... D^1 W^1`` at input ``x0`` (shape (N,)), shape (N, N)."""
        x = x0
        jac = None
        for w, b in zip(self.weights, self.biases, strict=True):
            h = w @ x + b
            d = self.activation.dphi(h)
            jac = w if jac is None else w @ jac
            jac = d.unsqueeze(1) * jac
            x = self.activation.phi(h)
        return jac


def random_network(
    activation, weights: str, depth: int, sigma_w2: float, sigma_b2: float, width: int,
    generator: torch.Generator,
) -> RandomNetwork:
    """Draw one network (see module docstring)."""
    check_choice("weights", weights, WEIGHTS)
    act = get_activation(activation)
    sw = math.sqrt(sigma_w2)
    ws, bs = [], []
    for _ in range(depth):
        if weights == "gaussian":
            w = torch.randn(width, width, generator=generator, dtype=torch.float64)
            w = w * (sw / math.sqrt(width))
        else:
            w = sw * haar_orthogonal(width, generator)
        ws.append(w)
        bs.append(math.sqrt(sigma_b2) * torch.randn(width, generator=generator,
                                                     dtype=torch.float64))
    return RandomNetwork(act, tuple(ws), tuple(bs))


@dataclass(frozen=True)
class SimulatedSpectrum:
    """Pooled eigenvalues of JJ^T from simulated networks, with their settings.

    ``floor``: eigenvalues below it are not resolved in float64
    (``(N L eps)^2 lambda_max``); they still count in the CDF at the floor."""

    activation: str
    weights: str
    depth: int
    sigma_w2: float
    sigma_b2: float
    width: int
    num_inputs: int
    num_instances: int
    seed: int | None
    q_star: float
    eigenvalues: np.ndarray = field(repr=False)
    m1: float = math.nan
    m2: float = math.nan
    variance: float = math.nan
    lambda_max: float = math.nan
    floor: float = 0.0
    sample_m1: tuple = ()
    sample_m2: tuple = ()

    @property
    def m1_stderr(self) -> float:
        """Standard error of m1 over the pooled samples (NaN for one sample)."""
        a = np.asarray(self.sample_m1)
        return float(a.std(ddof=1) / math.sqrt(a.size)) if a.size > 1 else math.nan

    @property
    def m2_stderr(self) -> float:
        a = np.asarray(self.sample_m2)
        return float(a.std(ddof=1) / math.sqrt(a.size)) if a.size > 1 else math.nan

    @property
    def settings(self) -> dict:
        """The simulated networks: family, width, inputs and instances, seed."""
        keys = ("activation", "weights", "depth", "sigma_w2", "sigma_b2", "width",
                "num_inputs", "num_instances", "seed")
        return {k: getattr(self, k) for k in keys}

    def summary(self) -> dict:
        """The settings and the pooled scalars: q*, moments with standard errors, edge,
        floor (JSON-able; a one-sample standard error is None)."""
        keys = ("q_star", "m1", "m2", "variance", "lambda_max", "floor", "m1_stderr",
                "m2_stderr")
        return jsonable({**self.settings, **{k: getattr(self, k) for k in keys}})

    def to_dict(self) -> dict:
        """:meth:`summary` and ``settings`` (the pooled eigenvalues are in :meth:`to_frame`)."""
        return {**self.summary(), "settings": jsonable(self.settings)}

    def to_frame(self) -> pd.DataFrame:
        """One row per pooled eigenvalue."""
        return pd.DataFrame({"eigenvalue": self.eigenvalues})


def simulate_spectrum(
    activation,
    weights: str,
    depth: int,
    sigma_w2: float,
    sigma_b2: float,
    *,
    width: int = 1000,
    num_inputs: int = 1,
    num_instances: int = 1,
    seed: int | torch.Generator = 0,
    q0: float = 1.0,
    progress: bool = False,
) -> SimulatedSpectrum:
    """Squared singular values of the N x N input-output Jacobian of random networks,
    pooled over ``num_inputs`` inputs for each of ``num_instances`` networks."""
    act = get_activation(activation)
    check_choice("weights", weights, WEIGHTS)
    for name, v in (("depth", depth), ("width", width), ("num_inputs", num_inputs),
                    ("num_instances", num_instances)):
        positive_int(name, v)
    gen = torch_generator(seed)
    q, _ = q_star(act, sigma_w2, sigma_b2, q0=q0)
    eigs = []
    total = num_instances * num_inputs
    bar = progress_bar(progress, total=total, desc="jacobians")
    try:
        for _ in range(num_instances):
            net = random_network(act, weights, depth, sigma_w2, sigma_b2, width, gen)
            for _ in range(num_inputs):
                h0 = math.sqrt(q) * torch.randn(width, generator=gen, dtype=torch.float64)
                jac = net.jacobian(act.phi(h0))
                sv = torch.linalg.svdvals(jac)
                eigs.append((sv * sv).numpy())
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    ev = np.sort(np.concatenate(eigs))
    lam_max = float(ev[-1])
    floor = (width * depth * _EPS) ** 2 * lam_max
    return SimulatedSpectrum(
        activation=act.name, weights=weights, depth=int(depth), sigma_w2=float(sigma_w2),
        sigma_b2=float(sigma_b2), width=int(width), num_inputs=int(num_inputs),
        num_instances=int(num_instances), seed=seed if isinstance(seed, int) else None,
        q_star=q, eigenvalues=ev, m1=float(ev.mean()), m2=float(np.mean(ev * ev)),
        variance=float(ev.var()), lambda_max=lam_max, floor=floor,
        sample_m1=tuple(float(e.mean()) for e in eigs),
        sample_m2=tuple(float(np.mean(e * e)) for e in eigs),
    )


def ks_distance(theory: JacobianSpectrum, eigenvalues: np.ndarray, floor: float = 0.0) -> float:
    """``sup_{t >= floor} |F_emp(t) - F_theory(t)|`` (both one-sided limits at the samples;
    samples within 1e-8 relative of a theoretical atom are snapped onto it)."""
    ev = np.sort(np.asarray(eigenvalues, dtype=np.float64))
    for a in theory.atoms:
        if a["at"] > 0:
            near = np.abs(ev - a["at"]) <= 1e-8 * a["at"]
            ev[near] = a["at"]
    n = ev.size
    pts = np.unique(ev[ev >= floor])
    pts = np.concatenate([[max(floor, 1e-300)], pts])
    f_th = theory.cdf(pts)
    jump = np.zeros_like(pts)
    for a in theory.atoms:
        jump += a["mass"] * (pts == a["at"])
    f_th_left = f_th - jump
    f_emp = np.searchsorted(ev, pts, side="right") / n
    f_emp_left = np.searchsorted(ev, pts, side="left") / n
    d = np.maximum(np.abs(f_emp - f_th), np.abs(f_emp_left - f_th_left))
    return float(np.max(d))


@dataclass(frozen=True)
class Comparison:
    """Theory against simulation: relative moment errors and KS distance."""

    activation: str
    weights: str
    depth: int
    m1_theory: float
    m1_sim: float
    m2_theory: float
    m2_sim: float
    m1_rel_err: float
    m2_rel_err: float
    ks: float
    floor: float

    @property
    def settings(self) -> dict:
        """The network family compared."""
        return {"activation": self.activation, "weights": self.weights, "depth": self.depth}

    def summary(self) -> dict:
        """Every field, JSON-able."""
        return jsonable(dict(self.__dict__))

    def to_dict(self) -> dict:
        """Every field and ``settings``, JSON-able."""
        return {**self.summary(), "settings": jsonable(self.settings)}

    def to_frame(self) -> pd.DataFrame:
        """One row of every field."""
        return pd.DataFrame([dict(self.__dict__)])


def compare(theory: JacobianSpectrum, sim: SimulatedSpectrum) -> Comparison:
    """Moments (relative errors) and KS distance of a simulation against the theory."""
    return Comparison(
        activation=theory.activation, weights=theory.weights, depth=theory.depth,
        m1_theory=theory.m1, m1_sim=sim.m1, m2_theory=theory.m2, m2_sim=sim.m2,
        m1_rel_err=abs(sim.m1 / theory.m1 - 1.0), m2_rel_err=abs(sim.m2 / theory.m2 - 1.0),
        ks=ks_distance(theory, sim.eigenvalues, sim.floor), floor=sim.floor,
    )
