"""Apply the fitted SG light as the world's environment texture."""

from __future__ import annotations

import bpy
import numpy as np

from .core.frame import SceneFrame
from .core.light import SGLight

WORLD_IMAGE = "blend123 fitted light"


def apply(scene: bpy.types.Scene, light_json: str, frame: SceneFrame, width: int = 256) -> bpy.types.World:
    light = SGLight.from_json(light_json).rotated(frame.to_scene()[:3, :3])
    env = light.equirect(width, width // 2)
    rgba = np.concatenate([env, np.ones(env.shape[:2] + (1,), np.float32)], -1)
    old = bpy.data.images.get(WORLD_IMAGE)
    if old is not None:
        bpy.data.images.remove(old)
    image = bpy.data.images.new(WORLD_IMAGE, env.shape[1], env.shape[0], alpha=False, float_buffer=True)
    image.pixels.foreach_set(np.ascontiguousarray(rgba[::-1]).ravel())
    image.pack()
    world = scene.world or bpy.data.worlds.new("World")
    scene.world = world
    if world.node_tree is None:
        world.use_nodes = True
    nodes, links = world.node_tree.nodes, world.node_tree.links
    nodes.clear()
    env_node = nodes.new("ShaderNodeTexEnvironment")
    env_node.image = image
    background = nodes.new("ShaderNodeBackground")
    out = nodes.new("ShaderNodeOutputWorld")
    links.new(env_node.outputs["Color"], background.inputs["Color"])
    links.new(background.outputs["Background"], out.inputs["Surface"])
    env_node.location, background.location = (-500, 0), (-200, 0)
    return world
