"""Spectra of the data Jacobian: Gram matrices, operators, exact eigenvalues, Krylov
estimates, metrics."""
