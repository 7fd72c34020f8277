"""The evaluation objects and their lighting, built in Blender from primitives and modifiers.

Every object is one closed mesh (parts merged by exact Boolean unions and differences, so
the ground-truth surface has no hidden inner walls) that fits in a sphere of radius 0.5
about the origin, with a loud, clearly patterned albedo defined in object space (no UV
seams to get wrong) and a purely Lambertian material, so Cycles' diffuse-colour pass is
exactly the albedo. The front of each object faces -Y, toward the reference camera.

Lighting is a sun (soft shadows) plus a sky-to-ground gradient environment, strong
enough that shading varies about fourfold across a surface: de-lighting matters.

``SEEN`` objects may be looked at while tuning; ``UNSEEN`` ones (other shapes, other
light, one with a little specular) only for the final held-out numbers. bpy is imported
only when building, so the catalogue can be read without Blender.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Callable

# --- colours ------------------------------------------------------------------------------


def srgb(hex_colour: str) -> tuple[float, float, float, float]:
    """'#rrggbb' (sRGB, as a painter picks it) -> linear RGBA for Blender's node sockets."""
    value = hex_colour.lstrip("#")
    channels = [int(value[i : i + 2], 16) / 255.0 for i in (0, 2, 4)]
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return (*linear, 1.0)


# Saturated but below ~0.8 linear, so lit colours stay under 1.0 (no clipping).
RED, ORANGE, YELLOW = "#d7301f", "#f28e2b", "#e6c440"
GREEN, TEAL, BLUE = "#59a14f", "#2ca6a4", "#4e79a7"
PURPLE, PINK, WHITE = "#8c5fa8", "#f59aa5", "#e4e4e4"
DARK, BROWN, TAN = "#3a3a46", "#8a5a3c", "#c99a5b"


# --- lighting -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Lighting:
    """A sun plus an environment graded from ground through horizon to zenith (linear RGB)."""

    sun_elevation_deg: float
    sun_azimuth_deg: float  # world azimuth the sunlight comes from
    sun_strength: float  # irradiance, W/m^2 (Blender's sun strength)
    sun_colour: tuple[float, float, float]
    sun_angle_deg: float  # angular diameter: the softness of its shadows
    zenith: tuple[float, float, float]
    horizon: tuple[float, float, float]
    ground: tuple[float, float, float]
    environment_strength: float = 1.0

    def sun_direction(self) -> tuple[float, float, float]:
        """Unit vector toward the sun."""
        e, a = math.radians(self.sun_elevation_deg), math.radians(self.sun_azimuth_deg)
        return (math.cos(e) * math.cos(a), math.cos(e) * math.sin(a), math.sin(e))


#: Sun from the front right and above, a bluish sky and a dark warm ground.
STUDIO = Lighting(
    sun_elevation_deg=50.0, sun_azimuth_deg=-60.0, sun_strength=2.0, sun_colour=(1.0, 0.93, 0.82), sun_angle_deg=3.0,
    zenith=(0.32, 0.42, 0.58), horizon=(0.42, 0.42, 0.40), ground=(0.16, 0.13, 0.10),
)
#: Lower sun from the front left, warmer sky: longer shadows.
AFTERNOON = Lighting(
    sun_elevation_deg=35.0, sun_azimuth_deg=-150.0, sun_strength=1.9, sun_colour=(1.0, 0.88, 0.74), sun_angle_deg=4.0,
    zenith=(0.36, 0.40, 0.50), horizon=(0.46, 0.42, 0.36), ground=(0.14, 0.14, 0.12),
)
#: High sun from behind on the right, cool sky: the front is lit mostly by the sky.
OVERCAST_BACK = Lighting(
    sun_elevation_deg=60.0, sun_azimuth_deg=30.0, sun_strength=2.2, sun_colour=(0.96, 0.96, 1.0), sun_angle_deg=8.0,
    zenith=(0.38, 0.44, 0.56), horizon=(0.44, 0.46, 0.48), ground=(0.12, 0.12, 0.13),
)


# --- building blocks (bpy) ------------------------------------------------------------------


class Kit:
    """Small helpers over bpy: primitives, Boolean merges, Lambertian materials."""

    def __init__(self) -> None:
        import bpy  # only here: the catalogue itself must load without Blender

        self.bpy = bpy

    # primitives: each returns a new mesh object with one material
    def cylinder(self, radius, depth, location, material, rotation=(0, 0, 0), vertices=96):
        self.bpy.ops.mesh.primitive_cylinder_add(
            vertices=vertices, radius=radius, depth=depth, location=location, rotation=rotation
        )
        return self._finish(material)

    def cone(self, radius1, radius2, depth, location, material, rotation=(0, 0, 0), vertices=96):
        self.bpy.ops.mesh.primitive_cone_add(
            vertices=vertices, radius1=radius1, radius2=radius2, depth=depth, location=location, rotation=rotation
        )
        return self._finish(material)

    def box(self, size, location, material, rotation=(0, 0, 0)):
        self.bpy.ops.mesh.primitive_cube_add(size=1.0, location=location, rotation=rotation, scale=size)
        return self._finish(material)

    def sphere(self, radius, location, material, segments=96, rings=48):
        self.bpy.ops.mesh.primitive_uv_sphere_add(segments=segments, ring_count=rings, radius=radius, location=location)
        return self._finish(material)

    def torus(self, major, minor, location, material, rotation=(0, 0, 0)):
        self.bpy.ops.mesh.primitive_torus_add(
            major_radius=major, minor_radius=minor, major_segments=96, minor_segments=32,
            location=location, rotation=rotation,
        )
        return self._finish(material)

    def _finish(self, material):
        ob = self.bpy.context.active_object
        # Bake the placement into the vertices: object space is world space from here on,
        # and modifiers (bevel widths) see true sizes rather than a unit cube's.
        ob.data.transform(ob.matrix_basis)
        ob.matrix_basis.identity()
        ob.data.materials.append(material)
        return ob

    # merging
    def union(self, base, *others):
        return self._boolean(base, "UNION", others)

    def difference(self, base, *cutters):
        return self._boolean(base, "DIFFERENCE", cutters)

    def _boolean(self, base, operation, operands):
        for i, other in enumerate(operands):
            mod = base.modifiers.new(f"{operation.lower()}{i}", "BOOLEAN")
            mod.operation = operation
            mod.solver = "EXACT"
            mod.material_mode = "TRANSFER"  # the operand's faces keep its material
            mod.object = other
        self.apply_modifiers(base)
        for other in operands:
            self.bpy.data.objects.remove(other, do_unlink=True)
        return base

    def bevel(self, ob, width, segments=3):
        mod = ob.modifiers.new("bevel", "BEVEL")
        mod.width = width
        mod.segments = segments
        mod.limit_method = "ANGLE"
        self.apply_modifiers(ob)
        return ob

    def apply_modifiers(self, ob) -> None:
        """Bake the modifier stack into the mesh (context-free, unlike modifier_apply)."""
        depsgraph = self.bpy.context.evaluated_depsgraph_get()
        evaluated = ob.evaluated_get(depsgraph)
        mesh = self.bpy.data.meshes.new_from_object(evaluated, preserve_all_data_layers=True, depsgraph=depsgraph)
        old = ob.data
        ob.modifiers.clear()
        ob.data = mesh
        self.bpy.data.meshes.remove(old)

    def smooth(self, ob, angle_deg: float = 35.0):
        """The last step: weld coincident vertices that Booleans leave where surfaces touch,
        then smooth shading with edges sharper than ``angle_deg`` kept crisp."""
        mod = ob.modifiers.new("weld", "WELD")
        mod.merge_threshold = 1e-5
        self.apply_modifiers(ob)
        ob.data.shade_smooth()
        ob.data.set_sharp_from_angle(angle=math.radians(angle_deg))
        return ob

    # materials: Lambertian (Diffuse BSDF) so the DiffCol pass equals the colour
    def material(self, name: str, colour: Callable, specular: float = 0.0, roughness: float = 0.45):
        """``colour(nodes, links, coords)`` returns the albedo socket; ``coords`` are object space.

        ``specular`` > 0 uses the Principled BSDF with that specular level and ``roughness``
        instead.
        """
        mat = self.bpy.data.materials.new(name)
        nodes, links = mat.node_tree.nodes, mat.node_tree.links
        nodes.clear()
        out = nodes.new("ShaderNodeOutputMaterial")
        coords = nodes.new("ShaderNodeTexCoord").outputs["Object"]
        if specular > 0:
            bsdf = nodes.new("ShaderNodeBsdfPrincipled")
            bsdf.inputs["Roughness"].default_value = roughness
            bsdf.inputs["Specular IOR Level"].default_value = specular
        else:
            bsdf = nodes.new("ShaderNodeBsdfDiffuse")
            bsdf.inputs["Roughness"].default_value = 0.0
        links.new(colour(nodes, links, coords), bsdf.inputs[0])
        links.new(bsdf.outputs[0], out.inputs["Surface"])
        return mat


# --- albedo patterns: functions (nodes, links, coords) -> colour socket ---------------------


def solid(hex_colour: str):
    def build(nodes, links, coords):
        rgb = nodes.new("ShaderNodeRGB")
        rgb.outputs[0].default_value = srgb(hex_colour)
        return rgb.outputs[0]

    return build


def checker(a: str, b: str, scale: float):
    def build(nodes, links, coords):
        tex = nodes.new("ShaderNodeTexChecker")
        tex.inputs["Color1"].default_value = srgb(a)
        tex.inputs["Color2"].default_value = srgb(b)
        tex.inputs["Scale"].default_value = scale
        links.new(coords, tex.inputs["Vector"])
        return tex.outputs["Color"]

    return build


def bands(colours: list[str], period: float, axis: str = "Z", offset: float = 0.0):
    """Hard-edged stripes across ``axis``, cycling through ``colours`` every ``period``."""

    def build(nodes, links, coords):
        split = nodes.new("ShaderNodeSeparateXYZ")
        links.new(coords, split.inputs[0])
        phase = nodes.new("ShaderNodeMath")
        phase.operation = "MULTIPLY_ADD"
        phase.inputs[1].default_value = 1.0 / period
        phase.inputs[2].default_value = offset
        links.new(split.outputs[axis], phase.inputs[0])
        frac = nodes.new("ShaderNodeMath")
        frac.operation = "FRACT"
        links.new(phase.outputs[0], frac.inputs[0])
        ramp = nodes.new("ShaderNodeValToRGB")
        ramp.color_ramp.interpolation = "CONSTANT"
        _ramp_stops(ramp, [(i / len(colours), srgb(c)) for i, c in enumerate(colours)])
        links.new(frac.outputs[0], ramp.inputs["Fac"])
        return ramp.outputs["Color"]

    return build


def cells(scale: float, low: float = 0.12, high: float = 0.62):
    """Voronoi cells, each a random colour squeezed into [low, low + high] (linear)."""

    def build(nodes, links, coords):
        tex = nodes.new("ShaderNodeTexVoronoi")
        tex.inputs["Scale"].default_value = scale
        links.new(coords, tex.inputs["Vector"])
        squeeze = nodes.new("ShaderNodeVectorMath")
        squeeze.operation = "MULTIPLY_ADD"
        squeeze.inputs[1].default_value = (high, high, high)
        squeeze.inputs[2].default_value = (low, low, low)
        links.new(tex.outputs["Color"], squeeze.inputs[0])
        return squeeze.outputs[0]

    return build


def mix(factor, a, b):
    """``a`` where ``factor`` is 0, ``b`` where it is 1 (factor: a pattern's colour socket)."""

    def build(nodes, links, coords):
        node = nodes.new("ShaderNodeMix")
        node.data_type = "RGBA"
        links.new(factor(nodes, links, coords), node.inputs["Factor"])
        links.new(a(nodes, links, coords), node.inputs[6])
        links.new(b(nodes, links, coords), node.inputs[7])
        return node.outputs[2]

    return build


def grid_image(scale: float):
    """Blender's generated colour-grid image, box-projected in object space (an image albedo)."""

    def build(nodes, links, coords):
        import bpy

        image = bpy.data.images.get("quality_grid") or bpy.data.images.new("quality_grid", 512, 512)
        image.generated_type = "COLOR_GRID"
        mapping = nodes.new("ShaderNodeMapping")
        mapping.inputs["Scale"].default_value = (scale, scale, scale)
        links.new(coords, mapping.inputs["Vector"])
        tex = nodes.new("ShaderNodeTexImage")
        tex.image = image
        tex.projection = "BOX"
        tex.projection_blend = 0.15
        links.new(mapping.outputs[0], tex.inputs["Vector"])
        # The grid's brightest cells are near 1.0: scale into the unclipped range.
        dim = nodes.new("ShaderNodeVectorMath")
        dim.operation = "SCALE"
        dim.inputs["Scale"].default_value = 0.78
        links.new(tex.outputs["Color"], dim.inputs[0])
        return dim.outputs[0]

    return build


# --- the objects ------------------------------------------------------------------------


def mug(kit: Kit):
    """Hollow cylinder with a torus handle: a deep concavity and a hole through the handle."""
    outside = mix(checker("#000000", "#ffffff", 9.0), bands([RED, YELLOW, BLUE, GREEN], 0.14), solid(WHITE))
    body = kit.cylinder(0.26, 0.56, (0, 0, -0.03), kit.material("mug_out", outside))
    cavity = kit.cylinder(0.22, 0.62, (0, 0, 0.05), kit.material("mug_in", checker(PINK, PURPLE, 7.0)))
    handle_colour = kit.material("mug_handle", solid(TEAL))
    handle = kit.torus(0.13, 0.03, (0.3, 0, -0.03), handle_colour, rotation=(math.pi / 2, 0, 0))
    kit.difference(body, cavity)
    return kit.smooth(kit.union(body, handle))


def bowl(kit: Kit):
    """Hemispherical shell on a foot: the inside is invisible to silhouettes."""
    shell = kit.sphere(0.42, (0, 0, 0.08), kit.material("bowl_out", cells(9.0)))
    # The cut sits off the sphere's equator ring: coplanar cuts make slivers.
    lid = kit.box((1.2, 1.2, 1.2), (0, 0, 0.683), kit.material("bowl_cut", solid(WHITE)))
    inner = kit.sphere(0.37, (0, 0, 0.08), kit.material("bowl_in", bands([YELLOW, ORANGE, PINK, PURPLE], 0.09)))
    foot = kit.cylinder(0.16, 0.08, (0, 0, -0.34), kit.material("bowl_foot", solid(BLUE)))
    kit.difference(shell, lid, inner)
    return kit.smooth(kit.union(shell, foot))


def arch(kit: Kit):
    """A U: two pillars on a base, bevelled; the gap between them is open to the front."""
    base = kit.box((0.72, 0.24, 0.12), (0, 0, -0.22), kit.material("arch_base", checker(RED, WHITE, 10.0)))
    left = kit.box((0.14, 0.24, 0.46), (-0.29, 0, 0.03), kit.material("arch_left", checker(GREEN, YELLOW, 12.0)))
    right = kit.box((0.14, 0.24, 0.46), (0.29, 0, 0.03), kit.material("arch_right", bands([BLUE, ORANGE], 0.08)))
    for part in (base, left, right):  # bevel the parts: bevelling the union's ngons degenerates
        kit.bevel(part, 0.015, 2)
    return kit.smooth(kit.union(base, left, right))


def lamp(kit: Kit):
    """Thin parts: a pole under 10 px wide at 256 px and a thinner rod with a knob."""
    base = kit.cylinder(0.22, 0.06, (0, 0, -0.37), kit.material("lamp_base", checker(DARK, YELLOW, 12.0)))
    pole = kit.cylinder(0.022, 0.56, (0, 0, -0.08), kit.material("lamp_pole", solid(RED)), vertices=32)
    shade = kit.cone(0.26, 0.11, 0.24, (0, 0, 0.28), kit.material("lamp_shade", bands([TEAL, WHITE, ORANGE], 0.08)))
    rod_colour = kit.material("lamp_rod", solid(PURPLE))
    rod = kit.cylinder(0.014, 0.2, (0.1, 0, 0.0), rod_colour, rotation=(0, math.pi / 2, 0), vertices=24)
    knob = kit.sphere(0.04, (0.2, 0, 0.0), kit.material("lamp_knob", solid(GREEN)), segments=32, rings=16)
    return kit.smooth(kit.union(base, pole, shade, rod, knob))


def blob(kit: Kit):
    """Rounded box with a ball on top: convex-ish, random colour cells and a fine checker."""
    box = kit.box((0.56, 0.4, 0.36), (-0.06, 0, -0.1), kit.material("blob_box", cells(7.0)))
    kit.bevel(box, 0.08, 4)
    ball = kit.sphere(0.2, (0.16, 0, 0.14), kit.material("blob_ball", checker(PINK, BLUE, 14.0)))
    return kit.smooth(kit.union(box, ball))


def table(kit: Kit):
    """A top on four legs 2.5 px wide at 256 px and two stretchers thinner still: a
    misregistration of 1-2 px (degraded views) is as wide as a leg."""
    top = kit.box((0.62, 0.4, 0.03), (0, 0, 0.16), kit.material("table_top", checker(BLUE, WHITE, 10.0)))
    wood = kit.material("table_wood", bands([BROWN, TAN], 0.06))
    parts = [kit.box((0.012, 0.012, 0.5), (x, y, -0.095), wood) for x in (-0.27, 0.27) for y in (-0.16, 0.16)]
    parts += [kit.box((0.54, 0.008, 0.008), (0, y, -0.2), wood) for y in (-0.16, 0.16)]
    return kit.smooth(kit.union(top, *parts))


def chair(kit: Kit):
    """(unseen) Seat, four thin legs, a slatted back: thin parts and see-through gaps."""
    seat = kit.box((0.42, 0.42, 0.05), (0, 0, -0.04), kit.material("chair_seat", checker(ORANGE, WHITE, 11.0)))
    wood = kit.material("chair_wood", bands([BROWN, TAN], 0.05))
    parts = [kit.box((0.04, 0.04, 0.34), (x, y, -0.235), wood) for x in (-0.18, 0.18) for y in (-0.18, 0.18)]
    parts += [kit.box((0.04, 0.04, 0.42), (x, 0.18, 0.19), wood) for x in (-0.18, 0.18)]
    slats = kit.material("chair_slats", bands([GREEN, BLUE], 0.1, axis="X"))
    parts += [kit.box((0.36, 0.03, 0.06), (0, 0.18, z), slats) for z in (0.18, 0.34)]
    return kit.smooth(kit.union(seat, *parts))


def donut(kit: Kit):
    """(unseen) Tilted torus, icing with sprinkles on top; a little specular (not Lambertian)."""
    icing_mask = bands(["#000000", "#ffffff"], 2.0, axis="Z", offset=0.49)  # icing above world z ~ 0.02
    colour = mix(icing_mask, solid(TAN), sprinkles(PINK, 30.0, 0.22))
    material = kit.material("donut", colour, specular=0.25)
    torus = kit.torus(0.27, 0.13, (0, 0, 0), material, rotation=(math.radians(25), 0, 0))
    return kit.smooth(torus, 80.0)


def snowman(kit: Kit):
    """(unseen) Stacked balls with an image albedo, a cone nose and stick arms (thin)."""
    grid = kit.material("snow_grid", grid_image(1.2))
    body = kit.sphere(0.26, (0, 0, -0.18), grid)
    head = kit.sphere(0.17, (0, 0, 0.2), grid)
    carrot = kit.material("snow_nose", solid(ORANGE))
    nose = kit.cone(0.035, 0.0, 0.16, (0, -0.22, 0.2), carrot, rotation=(math.pi / 2, 0, 0), vertices=32)
    stick = kit.material("snow_stick", solid(BROWN))
    arms = [
        kit.cylinder(0.015, 0.3, (s * 0.32, 0, -0.03), stick, rotation=(0, s * math.radians(65), 0), vertices=16)
        for s in (-1, 1)
    ]
    return kit.smooth(kit.union(body, head, nose, *arms), 50.0)


def tiles(kit: Kit):
    """Rounded box under a fine two-colour checker (cells ~5 px wide at 256 px): texture detail."""
    box = kit.box((0.5, 0.42, 0.5), (0, 0, -0.02), kit.material("tiles_box", checker(DARK, WHITE, 24.0)))
    kit.bevel(box, 0.06, 4)
    return kit.smooth(box)


def kettle(kit: Kit):
    """Glossy squat ball with a spout: a sharp specular highlight that must not become albedo."""
    glossy = kit.material("kettle_body", bands([TEAL, YELLOW, PINK], 0.12), specular=1.0, roughness=0.12)
    body = kit.sphere(0.3, (0, 0, -0.08), glossy)
    from mathutils import Matrix

    body.data.transform(Matrix.Diagonal((1.0, 1.0, 0.8, 1.0)))  # squat
    spout = kit.cylinder(0.05, 0.3, (0.3, 0, 0.02), glossy, rotation=(0, math.radians(55), 0), vertices=32)
    lid = kit.sphere(0.07, (0, 0, 0.2), kit.material("kettle_knob", solid(DARK)), segments=32, rings=16)
    return kit.smooth(kit.union(body, spout, lid))


def sprinkles(base: str, scale: float, radius: float):
    """Round dots of random colours (Voronoi feature points) on a ``base`` colour."""

    def build(nodes, links, coords):
        tex = nodes.new("ShaderNodeTexVoronoi")
        tex.inputs["Scale"].default_value = scale
        links.new(coords, tex.inputs["Vector"])
        dot = nodes.new("ShaderNodeMath")
        dot.operation = "LESS_THAN"
        dot.inputs[1].default_value = radius
        links.new(tex.outputs["Distance"], dot.inputs[0])
        squeeze = nodes.new("ShaderNodeVectorMath")  # keep dots below ~0.75 linear
        squeeze.operation = "MULTIPLY_ADD"
        squeeze.inputs[1].default_value = (0.7, 0.7, 0.7)
        squeeze.inputs[2].default_value = (0.05, 0.05, 0.05)
        links.new(tex.outputs["Color"], squeeze.inputs[0])
        node = nodes.new("ShaderNodeMix")
        node.data_type = "RGBA"
        links.new(dot.outputs[0], node.inputs["Factor"])
        node.inputs[6].default_value = srgb(base)
        links.new(squeeze.outputs[0], node.inputs[7])
        return node.outputs[2]

    return build


def _ramp_stops(ramp, stops: list[tuple[float, tuple]]) -> None:
    """Replace a colour ramp's stops; set by reference, as the ramp re-sorts on each move."""
    elements = ramp.color_ramp.elements
    first, last = elements[0], elements[1]
    first.position, first.color = stops[0]
    last.position, last.color = stops[1] if len(stops) > 1 else stops[0]
    for position, colour in stops[2:]:
        elements.new(position).color = colour


# --- catalogue -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ObjectSpec:
    name: str
    build: Callable[[Kit], object] = field(repr=False)
    lighting: Lighting = STUDIO
    notes: str = ""

    def describe(self) -> dict:
        return {"name": self.name, "notes": self.notes, "lighting": asdict(self.lighting)}


SEEN: list[ObjectSpec] = [
    ObjectSpec("mug", mug, STUDIO, "concavity (cup), handle hole"),
    ObjectSpec("bowl", bowl, STUDIO, "concavity (bowl), thin rim"),
    ObjectSpec("arch", arch, STUDIO, "U shape, flat faces, bevels"),
    ObjectSpec("lamp", lamp, STUDIO, "thin pole and rod"),
    ObjectSpec("blob", blob, STUDIO, "convex-ish, random colour cells"),
    ObjectSpec("tiles", tiles, STUDIO, "fine checker: a sharp texture"),
    ObjectSpec("kettle", kettle, STUDIO, "glossy (specular 1, roughness 0.12): a highlight"),
    ObjectSpec("table", table, AFTERNOON, "legs and stretchers 1.5-2.5 px wide"),
]
UNSEEN: list[ObjectSpec] = [
    ObjectSpec("chair", chair, AFTERNOON, "thin legs, slats, gaps"),
    ObjectSpec("donut", donut, AFTERNOON, "genus 1, specular 0.25"),
    ObjectSpec("snowman", snowman, OVERCAST_BACK, "image albedo, thin arms, back light"),
]
CATALOGUE: dict[str, ObjectSpec] = {spec.name: spec for spec in SEEN + UNSEEN}


def select(which: str) -> list[ObjectSpec]:
    """'seen', 'unseen', 'all', or a comma-separated list of names."""
    if which == "seen":
        return list(SEEN)
    if which == "unseen":
        return list(UNSEEN)
    if which == "all":
        return SEEN + UNSEEN
    names = [n.strip() for n in which.split(",") if n.strip()]
    unknown = [n for n in names if n not in CATALOGUE]
    if unknown or not names:
        raise ValueError(f"unknown objects {unknown}; choose from {sorted(CATALOGUE)} or seen/unseen/all")
    return [CATALOGUE[n] for n in names]


# --- the world ----------------------------------------------------------------------------


def setup_lighting(kit: Kit, lighting: Lighting) -> None:
    """Environment gradient on the world, plus a sun object."""
    bpy = kit.bpy
    from mathutils import Vector

    world = bpy.data.worlds.new("quality_world")
    bpy.context.scene.world = world
    nodes, links = world.node_tree.nodes, world.node_tree.links
    nodes.clear()
    coords = nodes.new("ShaderNodeTexCoord")  # Generated = view direction in a world shader
    split = nodes.new("ShaderNodeSeparateXYZ")
    links.new(coords.outputs["Generated"], split.inputs[0])
    to_unit = nodes.new("ShaderNodeMapRange")  # z in [-1, 1] -> [0, 1]
    to_unit.inputs["From Min"].default_value = -1.0
    links.new(split.outputs["Z"], to_unit.inputs["Value"])
    ramp = nodes.new("ShaderNodeValToRGB")
    stops = zip((0.0, 0.5, 1.0), (lighting.ground, lighting.horizon, lighting.zenith))
    _ramp_stops(ramp, [(position, (*colour, 1.0)) for position, colour in stops])
    links.new(to_unit.outputs[0], ramp.inputs["Fac"])
    background = nodes.new("ShaderNodeBackground")
    background.inputs["Strength"].default_value = lighting.environment_strength
    links.new(ramp.outputs["Color"], background.inputs["Color"])
    out = nodes.new("ShaderNodeOutputWorld")
    links.new(background.outputs[0], out.inputs["Surface"])

    sun = bpy.data.lights.new("quality_sun", "SUN")
    sun.energy = lighting.sun_strength
    sun.color = lighting.sun_colour
    sun.angle = math.radians(lighting.sun_angle_deg)
    ob = bpy.data.objects.new("quality_sun", sun)
    bpy.context.scene.collection.objects.link(ob)
    # A sun shines down its local -Z: point local +Z toward the sun.
    ob.rotation_mode = "QUATERNION"
    ob.rotation_quaternion = Vector(lighting.sun_direction()).to_track_quat("Z", "Y")


def build(spec: ObjectSpec):
    """Build ``spec`` and its lighting into the current (empty) scene; returns the object."""
    kit = Kit()
    ob = spec.build(kit)
    ob.name = spec.name
    setup_lighting(kit, spec.lighting)
    return ob
