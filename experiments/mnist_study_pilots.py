"""Pilots behind the mnist study's design choices (experiments/mnist_study.toml): networks
trained as the zoo trains them (jacspec.zoo.run.train.fit, 4,000 mnist5k digits, one torch
thread), each stopped at 100% train accuracy, its step budget or ``--seconds`` of wall time.

    .venv/bin/python experiments/mnist_study_pilots.py [--seconds 150] [--only NAME ...]

Prints one JSON line per case: final train accuracy, epochs, steps, seconds, and the
accuracy history at a few epochs. ``init_scale`` multiplies jacspec's default sigma_w
(6 for hard_sigmoid), so ``1/6`` reproduces the former default sigma_w = 1.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from jacspec.zoo.run.train import fit, load_data, make_model, resolve_config

BASE = {"dataset": "mnist5k", "n_train": 4000, "n_test": 1000, "data_seed": 0,
        "target_accuracy": 1.0, "target_loss": 0.0, "seed": 1, "model": "mlp"}
CASES = {
    # hard_sigmoid at sigma_w = 1 (the old default): SGD, depth 4, true labels
    "hard_sigmoid_sigma1_sgd": {"activation": "hard_sigmoid", "init_scale": 1 / 6,
                                "optimizer": "sgd", "lr": 0.05, "width": 64, "depth": 4,
                                "batch_size": 256, "max_steps": 20000},
    # RMSProp at lr 1e-3: hard_tanh 256x4, random labels
    "rmsprop_1e-3_hard_tanh": {"activation": "hard_tanh", "optimizer": "rmsprop", "lr": 1e-3,
                               "width": 256, "depth": 4, "batch_size": 32,
                               "random_labels": True, "max_steps": 20000},
    # random labels with augmentation (ReLU/Adam 64x2, batch 256)
    "random_augment": {"activation": "relu", "optimizer": "adam", "lr": 1e-3, "width": 64,
                       "depth": 2, "batch_size": 256, "augment": True,
                       "random_labels": True, "max_steps": 100000},
    # study A's CNN candidates on random labels: seconds per epoch and progress
    "cnn_16_32_random": {"model": "cnn", "width": 16, "depth": 2, "activation": "relu",
                         "optimizer": "adam", "lr": 1e-3, "batch_size": 64,
                         "random_labels": True, "max_steps": 100000},
    "cnn_32_random": {"model": "cnn", "width": 32, "depth": 1, "activation": "relu",
                      "optimizer": "adam", "lr": 1e-3, "batch_size": 64,
                      "random_labels": True, "max_steps": 100000},
}


def run(name: str, seconds: float) -> dict:
    cfg = resolve_config({**BASE, **CASES[name]})
    train, _ = load_data(cfg)
    model = make_model(cfg, train)
    t0, hist = time.perf_counter(), []

    def stop(epoch: int, acc: float, loss: float) -> bool:
        hist.append((epoch, round(acc, 4)))
        return time.perf_counter() - t0 > seconds

    res = fit(model, train, cfg, callback=stop)
    took = time.perf_counter() - t0
    return {"case": name, "train_accuracy": res.train_accuracy, "epochs": res.epochs,
            "steps": res.steps, "reached": res.reached, "seconds": round(took, 1),
            "seconds_per_epoch": round(took / max(res.epochs, 1), 2),
            "history": hist[:: max(1, len(hist) // 8)]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=150.0, help="wall-time cap per case")
    ap.add_argument("--only", nargs="*", choices=sorted(CASES), help="run these cases only")
    args = ap.parse_args()
    torch.set_num_threads(1)
    for name in args.only or CASES:
        print(json.dumps(run(name, args.seconds)), flush=True)


if __name__ == "__main__":
    main()
