"""Mesh reconstruction from an orbit of views: visual hull, light fit, UV unwrap, texture bake, GLB.

The entry point is :func:`blend123.backend.reconstruction.pipeline.reconstruct`. The other
modules are the reusable pieces: ``raster`` (CPU triangle rasteriser), ``carve`` (visual
hull field), ``mesh`` (surface extraction and clean-up), ``light`` (the 24-SG light),
``refine`` (differentiable rendering: light, albedo, vertex offsets), ``uv`` (xatlas), ``texture``
(colour baking), ``export`` (binary glTF), ``transforms`` (NeRF ``transforms.json``),
``synthetic`` and ``metrics`` (test scenes with ground truth, and how to score them).
"""
