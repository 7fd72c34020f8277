"""The mesh of a blend123 GLB as arrays, for the headless batch's ``--ray`` mode: the
cluster sends back GLBs, and the .blend files are made from them here. No bpy.

Reads what the backend writes (one triangle mesh, float positions and UVs, an embedded
PNG base colour) and undoes its conventions: glTF's Y up back to Blender's Z up, and V
back to a bottom-left origin.
"""

from __future__ import annotations

import struct

import numpy as np

from .glb import chunks, embedded_images, is_glb, png_size

_COMPONENTS = {5121: np.uint8, 5123: np.uint16, 5125: np.uint32, 5126: np.float32}
_WIDTH = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}


class GLBError(ValueError):
    """Not a GLB this reader understands."""


def _chunks(glb: bytes) -> tuple[dict, bytes]:
    if not is_glb(glb):
        raise GLBError("not a GLB file")
    doc, binary = chunks(glb)
    if doc is None:
        raise GLBError("the GLB has no JSON chunk")
    return doc, binary


def _accessor(doc: dict, binary: bytes, index: int) -> np.ndarray:
    acc = doc["accessors"][index]
    view = doc["bufferViews"][acc["bufferView"]]
    dtype = np.dtype(_COMPONENTS[acc["componentType"]])
    width = _WIDTH[acc["type"]]
    count = int(acc["count"])
    start = view.get("byteOffset", 0) + acc.get("byteOffset", 0)
    stride = view.get("byteStride", 0) or dtype.itemsize * width
    if stride == dtype.itemsize * width:
        data = np.frombuffer(binary, dtype, count * width, start)
    else:
        rows = np.frombuffer(binary, np.uint8, stride * (count - 1) + dtype.itemsize * width, start)
        data = np.lib.stride_tricks.as_strided(rows, (count, dtype.itemsize * width), (stride, 1)).copy().view(dtype)
    return data.reshape(count, width)


def read_mesh(glb: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]:
    """``(vertices (V, 3) Blender frame, faces (F, 3), uvs (V, 2) bottom-left, (tex_w, tex_h))``."""
    try:
        doc, binary = _chunks(glb)
        primitive = doc["meshes"][0]["primitives"][0]
        attributes = primitive["attributes"]
        positions = _accessor(doc, binary, attributes["POSITION"]).astype(np.float64)
        faces = _accessor(doc, binary, primitive["indices"]).reshape(-1, 3).astype(np.int32)
        uvs = _accessor(doc, binary, attributes["TEXCOORD_0"]).astype(np.float32) if "TEXCOORD_0" in attributes else None
    except (KeyError, IndexError, TypeError, ValueError, struct.error) as exc:
        raise GLBError(f"cannot read the mesh in the GLB: {exc}") from None
    vertices = np.stack([positions[:, 0], -positions[:, 2], positions[:, 1]], axis=1).astype(np.float32)  # glTF Y up -> Z up
    if uvs is not None:
        uvs = np.stack([uvs[:, 0], 1.0 - uvs[:, 1]], axis=1).astype(np.float32)
    else:
        uvs = np.zeros((len(vertices), 2), np.float32)
    size = next((png_size(data) for mime, data in embedded_images(glb) if mime == "image/png" and png_size(data)), None)
    return vertices, faces, uvs, size or (1, 1)
