"""Heavy-tail analysis of an ESD: power law, Marchenko-Pastur and randomized nulls,
WeightWatcher-named columns."""
