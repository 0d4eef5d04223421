"""Random-network theory: mean field (q*, chi, c*, depth scales), free-probability
Jacobian spectra (Pennington, Schoenholz, Ganguli 2018) and simulated networks."""
