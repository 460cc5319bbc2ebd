"""Instability analysis: interpolation, error barriers, and the appendix's comparisons."""
