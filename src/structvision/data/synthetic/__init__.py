"""Built-in procedural data generators with exact ground truth.

``GENERATORS`` maps a generator name (as used in a data spec such as ``shapes:seed=3``) to its
dataset class; every class takes keyword-only ``split``, ``num_images``, ``seed``, ``config``,
``transforms`` and config overrides.
"""

from structvision.data.synthetic.geometry import SHAPE_POLYGONS, object_polygon
from structvision.data.synthetic.render import (
    IGNORE_INDEX,
    RenderedScene,
    instance_targets,
    render_scene,
)
from structvision.data.synthetic.scene import Background, Scene, ShapeObject, Stroke
from structvision.data.synthetic.shapes import (
    CLASS_NAMES,
    ShapesConfig,
    ShapesDataset,
    sample_rng,
    sample_scene,
)

GENERATORS: dict[str, type] = {"shapes": ShapesDataset}

__all__ = [
    "CLASS_NAMES",
    "GENERATORS",
    "IGNORE_INDEX",
    "SHAPE_POLYGONS",
    "Background",
    "RenderedScene",
    "Scene",
    "ShapeObject",
    "ShapesConfig",
    "ShapesDataset",
    "Stroke",
    "instance_targets",
    "object_polygon",
    "render_scene",
    "sample_rng",
    "sample_scene",
]
