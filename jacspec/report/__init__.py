"""Figures and reports built from jacspec results (matplotlib, Agg backend)."""
