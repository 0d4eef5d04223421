"""Running a zoo: :mod:`~jacspec.zoo.run.train` (one run from a configuration),
:mod:`~jacspec.zoo.run.metrics` (the metric registry) with :mod:`~jacspec.zoo.run.flatness`
(Jiang et al.'s flatness and norm baselines), :mod:`~jacspec.zoo.run.sweep` (grids, local
and Ray backends) and :mod:`~jacspec.zoo.run.store` (the crash-safe SQLite store of results).

Nothing here imports :mod:`jacspec.zoo.rank`: results flow one way, from the store to the
ranking.
"""
