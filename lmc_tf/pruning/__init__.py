"""Pruning masks held in customized tfmot wrappers, and iterative magnitude pruning (IMP)."""
