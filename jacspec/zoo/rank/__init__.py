"""Ranking a zoo's metrics against the generalization gap: :mod:`~jacspec.zoo.rank.grid`
(groups and pairs of a grid of configurations), :mod:`~jacspec.zoo.rank.stats` (Kendall tau,
Psi, sign errors, paired comparisons), :mod:`~jacspec.zoo.rank.pgdl` (PGDL's CMI),
:mod:`~jacspec.zoo.rank.intervals` (bootstrap intervals), :mod:`~jacspec.zoo.rank.score`
(the score table of a store) and study 2's pre-registered test,
:mod:`~jacspec.zoo.rank.confirm` (partial Kendall tau, cluster bootstrap, max-T, Psi within
strata, verdict; built on :mod:`~jacspec.zoo.rank.confirm_stats` and
:mod:`~jacspec.zoo.rank.confirm_grid`).

Of :mod:`jacspec.zoo.run` it reads only the store (:mod:`jacspec.zoo.run.store`).
"""
