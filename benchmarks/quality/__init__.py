"""Quality benchmark: a small Blender-rendered evaluation set and the metrics that score a
reconstruction against it (geometry, held-out appearance, albedo / lighting separation).

Modules: ``poses`` (camera paths, no bpy), ``scenes`` (objects and lighting, bpy only when
building), ``render`` (Cycles renders into ``build/quality/``), ``dataset`` (reading a
rendered object back), ``metrics`` (scores). The driver is ``benchmarks/bench_quality.py``.
"""
