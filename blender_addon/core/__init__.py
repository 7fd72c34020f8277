"""bpy-free logic of the extension: scene-frame math, requests, job bookkeeping, batch.

Nothing here imports bpy, so it is unit-tested without Blender (as glTF-Blender-IO keeps
its ``io`` package apart from its ``blender`` one).
"""
