"""Read the embedded images of a binary glTF (GLB) without any glTF library.

The backend's GLB already holds the albedo texture as PNG: packing those bytes into the
.blend is instant, while re-encoding the pixels as PNG costs ~0.3 s for 2048x2048.
"""

from __future__ import annotations

import json
import struct

GLB_MAGIC = b"glTF"
CHUNK_JSON = 0x4E4F534A
CHUNK_BIN = 0x004E4942


def is_glb(data: bytes) -> bool:
    return len(data) >= 20 and data[:4] == GLB_MAGIC


def chunks(glb: bytes) -> tuple[dict | None, bytes]:
    """The GLB's JSON document (None if it has none, or is no GLB) and its binary chunk."""
    if not is_glb(glb):
        return None, b""
    offset, doc, binary = 12, None, b""
    while offset + 8 <= len(glb):
        length, kind = struct.unpack_from("<II", glb, offset)
        chunk = glb[offset + 8 : offset + 8 + length]
        if kind == CHUNK_JSON:
            doc = json.loads(chunk.decode("utf-8"))
        elif kind == CHUNK_BIN:
            binary = chunk
        offset += 8 + length
    return doc, binary


def embedded_images(glb: bytes) -> list[tuple[str, bytes]]:
    """``[(mime_type, bytes), ...]`` for every image stored in the GLB's binary chunk."""
    doc, binary = chunks(glb)
    if not doc:
        return []
    views = doc.get("bufferViews", [])
    out = []
    for image in doc.get("images", []):
        index = image.get("bufferView")
        if index is None or index >= len(views):
            continue
        view = views[index]
        start = view.get("byteOffset", 0)
        out.append((image.get("mimeType", ""), bytes(binary[start : start + view["byteLength"]])))
    return out


def png_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of PNG bytes, or None when ``data`` is not a PNG."""
    if len(data) < 24 or data[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    return struct.unpack(">II", data[16:24])
