"""Directions in a generator's latent space: the artifact every method writes, its
parametrisations, and the safe reader of its files.

    from directions import Directions

    d = Directions.load("outputs/<run>/directions.pt", generator=g)
    images = g(d.shift(g.sample(4), index=3, alpha=2.0))

- ``directions.parametrisations``: the ``DirectionSet`` classes (linear, orthogonal, RBF warps,
  MLP walks, per-layer, local ...) and the random / coordinate baselines;
- ``directions.artifact``: ``Directions``, the set plus what it was made for;
- ``directions.reader``: what a file may hold, and reading one without running anything in it.
"""
from directions.artifact import Directions, class_index, class_table
from directions.parametrisations import (
                                         BASELINE_KINDS,
                                         PARAMETRISATIONS,
                                         BasisDirections,
                                         DirectionSet,
                                         LayerVectors,
                                         LinearDirections,
                                         LocalDirections,
                                         MLPWalk,
                                         OrthoDirections,
                                         ProjDirections,
                                         RBFWarps,
                                         VectorDirections,
                                         baseline_set,
                                         build_set,
                                         edit_pairs,
)
from directions.reader import DIRECTIONS_FORMAT, DIRECTIONS_FORMAT_V1, READABLE_FORMATS

__all__ = ["Directions", "class_index", "class_table", "BASELINE_KINDS", "PARAMETRISATIONS", "BasisDirections",
           "DirectionSet", "LayerVectors", "LinearDirections", "LocalDirections", "MLPWalk", "OrthoDirections",
           "ProjDirections", "RBFWarps", "VectorDirections", "baseline_set", "build_set", "edit_pairs",
           "DIRECTIONS_FORMAT", "DIRECTIONS_FORMAT_V1", "READABLE_FORMATS"]
