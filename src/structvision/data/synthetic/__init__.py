"""Built-in procedural data generators with exact ground truth.

``GENERATORS`` maps a generator name (as used in a data spec such as ``shapes:seed=3``) to its
dataset class; every class takes keyword-only ``split``, ``num_images``, ``seed``, ``config``,
``transforms`` and config overrides.
"""

from structvision.data.synthetic.classification import ShapesClassificationDataset
from structvision.data.synthetic.figures import (
    FLIP_PAIRS,
    KEYPOINT_NAMES,
    KEYPOINT_SIGMAS,
    SKELETON,
    keypoint_targets,
    sample_figure,
    sample_pose,
)
from structvision.data.synthetic.geometry import SHAPE_POLYGONS, object_polygon
from structvision.data.synthetic.render import (
    IGNORE_INDEX,
    RenderedScene,
    instance_targets,
    render_scene,
)
from structvision.data.synthetic.scene import Background, Scene, ShapeObject, StickFigure, Stroke
from structvision.data.synthetic.scribbles import labelled_fraction, scribble_labels
from structvision.data.synthetic.shapes import (
    CLASS_NAMES,
    POSE_CONFIG,
    ShapesConfig,
    ShapesDataset,
    ShapesPoseDataset,
    sample_rng,
    sample_scene,
)
from structvision.data.synthetic.world import (
    WorldDataset,
    WorldFlowDataset,
    WorldStereoDataset,
    WorldTrackDataset,
    WorldVideoDataset,
)

GENERATORS: dict[str, type] = {
    "shapes": ShapesDataset,
    "shapes-cls": ShapesClassificationDataset,
    "shapes-pose": ShapesPoseDataset,
    "world": WorldDataset,
    "world-stereo": WorldStereoDataset,
    "world-flow": WorldFlowDataset,
    "world-video": WorldVideoDataset,
    "world-track": WorldTrackDataset,
}

__all__ = [
    "CLASS_NAMES",
    "FLIP_PAIRS",
    "GENERATORS",
    "IGNORE_INDEX",
    "KEYPOINT_NAMES",
    "KEYPOINT_SIGMAS",
    "POSE_CONFIG",
    "SHAPE_POLYGONS",
    "SKELETON",
    "Background",
    "RenderedScene",
    "Scene",
    "ShapeObject",
    "ShapesClassificationDataset",
    "ShapesConfig",
    "ShapesDataset",
    "ShapesPoseDataset",
    "StickFigure",
    "Stroke",
    "instance_targets",
    "keypoint_targets",
    "labelled_fraction",
    "object_polygon",
    "render_scene",
    "sample_figure",
    "sample_pose",
    "sample_rng",
    "sample_scene",
    "scribble_labels",
]
