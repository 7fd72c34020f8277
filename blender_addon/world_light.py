"""The fitted SG light as a World of its own: an environment texture that lights the scene.

The artist's World is never edited: the light goes into a new World named after the job
(made again in place when the same job's light is applied twice), and the scene is
pointed at it, so undo, or picking the old World, brings the artist's lighting back.
Camera rays see a plain background unless the environment is asked to be visible.
"""

from __future__ import annotations

import bpy
import numpy as np

from .core.frame import SceneFrame
from .core.light import SGLight

#: The World's custom property naming the job whose light it holds.
JOB_TAG = "blend123_light_job"
#: What camera rays see when the environment is not visible: Blender's default World grey.
PLAIN_BACKGROUND = (0.0509, 0.0509, 0.0509, 1.0)


def world_name(job_id: str) -> str:
    return f"blend123 light {job_id[:8]}" if job_id else "blend123 light"


def _environment_image(name: str, env: np.ndarray) -> bpy.types.Image:
    rgba = np.concatenate([env, np.ones(env.shape[:2] + (1,), np.float32)], -1)
    h, w = env.shape[:2]
    image = bpy.data.images.get(name)
    if image is None or not image.is_float:
        image = bpy.data.images.new(name, w, h, alpha=False, float_buffer=True)
    elif tuple(image.size) != (w, h):
        image.scale(w, h)
    image.pixels.foreach_set(np.ascontiguousarray(rgba[::-1]).ravel())
    image.pack()
    return image


def apply(
    scene: bpy.types.Scene, light_json: str, frame: SceneFrame, *, job_id: str = "", visible_to_camera: bool = False, width: int = 256
) -> bpy.types.World:
    """Make (or remake) the job's light World and assign it to ``scene``."""
    light = SGLight.from_json(light_json).rotated(frame.to_scene()[:3, :3])
    env = light.equirect(width, width // 2)
    name = world_name(job_id)
    world = next((w for w in bpy.data.worlds if w.get(JOB_TAG) == (job_id or name)), None)
    if world is None:
        world = bpy.data.worlds.new(name)
        world[JOB_TAG] = job_id or name
    image = _environment_image(f"{world.name} environment", env)
    if world.node_tree is None:  # Blender < 5.0 makes worlds without nodes
        world.use_nodes = True
    nodes, links = world.node_tree.nodes, world.node_tree.links
    nodes.clear()
    env_node = nodes.new("ShaderNodeTexEnvironment")
    env_node.image = image
    lighting = nodes.new("ShaderNodeBackground")
    lighting.name = "Fitted light"
    out = nodes.new("ShaderNodeOutputWorld")
    links.new(env_node.outputs["Color"], lighting.inputs["Color"])
    env_node.location, lighting.location, out.location = (-700, 200), (-400, 200), (200, 0)
    if visible_to_camera:
        links.new(lighting.outputs["Background"], out.inputs["Surface"])
    else:
        # Camera rays see a plain background; every other ray (lighting) sees the fit.
        path = nodes.new("ShaderNodeLightPath")
        plain = nodes.new("ShaderNodeBackground")
        plain.name = "Camera background"
        plain.inputs["Color"].default_value = PLAIN_BACKGROUND
        mix = nodes.new("ShaderNodeMixShader")
        links.new(path.outputs["Is Camera Ray"], mix.inputs["Fac"])
        links.new(lighting.outputs["Background"], mix.inputs[1])
        links.new(plain.outputs["Background"], mix.inputs[2])
        links.new(mix.outputs["Shader"], out.inputs["Surface"])
        path.location, plain.location, mix.location = (-400, 500), (-400, -100), (-100, 0)
    world["blend123_visible_to_camera"] = visible_to_camera
    scene.world = world
    return world
