"""Procedural 3D worlds rendered by an exact torch ray caster (depth, stereo, flow, normals).

:mod:`~structvision.data.synthetic.world.scene` samples scenes and rigid motion;
:mod:`~structvision.data.synthetic.world.raycast` renders every layer of a view exactly.
"""

from structvision.data.synthetic.world.dataset import (
    WorldDataset,
    WorldFlowDataset,
    WorldStereoDataset,
    WorldVideoDataset,
)
from structvision.data.synthetic.world.raycast import RenderLayers, project, render
from structvision.data.synthetic.world.scene import (
    CLASS_NAMES,
    Camera,
    Motion,
    WorldConfig,
    WorldScene,
    camera_at,
    sample_motion,
    sample_world_scene,
    scene_at,
    world_rng,
)
from structvision.data.synthetic.world.tracking import WorldTrackDataset

__all__ = [
    "CLASS_NAMES",
    "Camera",
    "Motion",
    "RenderLayers",
    "WorldConfig",
    "WorldDataset",
    "WorldFlowDataset",
    "WorldScene",
    "WorldStereoDataset",
    "WorldTrackDataset",
    "WorldVideoDataset",
    "camera_at",
    "project",
    "render",
    "sample_motion",
    "sample_world_scene",
    "scene_at",
    "world_rng",
]
