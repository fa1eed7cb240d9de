"""Experiments that sit above train/ and export/ (they use both): the model comparison."""
