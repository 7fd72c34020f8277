"""Mesh reconstruction from an orbit of views: visual hull, light fit, UV unwrap, texture bake, GLB.

The entry point is :func:`blend123.backend.reconstruction.pipeline.reconstruct`. The other
modules are the reusable pieces: ``masks`` (subject masks from alpha or a plain
background), ``carve`` (visual hull field), ``photo`` (photo-consistency carving), ``mesh``
(surface extraction and clean-up), ``light`` (the 24-SG light), ``refine`` (differentiable
rendering: light, albedo, vertex offsets), ``sds`` (masked score distillation), ``uv``
(xatlas, in a helper process), ``texels`` (the surface point behind each texel),
``texture`` (colour baking), ``export`` (binary glTF), ``transforms`` (NeRF
``transforms.json``), ``projection`` (pinhole projection in torch) and ``parallel`` (work
on the free CPUs, in order). The CPU rasteriser they share is ``blend123.backend.raster``.
"""
