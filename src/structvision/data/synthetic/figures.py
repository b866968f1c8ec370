"""Articulated stick figures: the ``person`` class of ``shapes:figures=true`` and ``shapes-pose``.

A figure is 15 named keypoints joined by the 14 limbs of :data:`SKELETON` (a tree): every limb
is drawn as a capsule (a thick segment with round caps) of one width, the head as a disc
centred on the ``head`` keypoint. Its instance mask is exactly the painted pixels that stay
visible after later objects and strokes are drawn (see
:mod:`structvision.data.synthetic.render`).

Coordinates. Keypoints are continuous pixel coordinates ``(x, y)``, the convention of
:mod:`structvision.data.synthetic.scene`, of structvision's boxes and of torchvision's keypoint
heatmap encoding (``keypoints_to_heatmap`` floors ``x``, decoding adds ``0.5``): pixel
``(col j, row i)`` covers ``[j, j + 1) x [i, i + 1)``, so a keypoint at ``(x, y)`` lies in pixel
``(floor(x), floor(y))`` and a horizontal flip maps ``x`` to ``W - x``. They are written to COCO
files unchanged (pycocotools' OKS only compares ground truth with predictions, so any common
convention gives the same AP; detectron2's COCO loader adds 0.5 to keypoints, assuming integer
pixel indices, and so sees ours half a pixel to the lower right).

Visibility follows COCO: ``v = 2`` the keypoint's pixel shows the figure; ``v = 1`` the keypoint
is inside the image but its pixel is covered by another object or by a stroke drawn on top
(self-occlusion by the figure's own limbs counts as visible); ``v = 0`` the keypoint lies
outside the image and is stored as ``(0, 0, 0)``. Limbs are at least :data:`MIN_LIMB_WIDTH`
pixels wide, so the pixel of every keypoint inside the image belongs to the figure's full
(unoccluded) mask.

Chirality. A figure faces the viewer: in its own frame (head up) the ``left_*`` joints are
attached on the image's right, as for a person facing a camera. A horizontal flip mirrors the
figure, and swapping the :data:`FLIP_PAIRS` restores that chirality, so flipped samples are
samples of the same distribution.

OKS sigmas. COCO's object keypoint similarity scores a predicted keypoint at distance ``d`` as
``exp(-d**2 / (2 * area * (2 * sigma)**2))``, ``area`` being the instance's segment area: the
tolerance is a Gaussian of standard deviation ``2 * sigma * sqrt(area)`` pixels. COCO measured
its sigmas from annotator disagreement; ours are exact joint centres, so the tolerance is set by
how well the drawing pins a joint down, in units of the limb width ``w``: standard deviation
``alpha * w`` with ``alpha`` 0.5 where three or more limbs meet or at the head disc's centre
(head, neck, pelvis), 0.6 at the corner where a limb leaves the shoulder or hip bar, 0.7 at the
round tip of a limb (wrists, ankles: the joint is half a width inside the tip) and 0.8 at elbows
and knees (a straight limb shows no bend; the joint is then placed by the body's proportions
alone). Hence ``sigma = alpha * w / (2 * sqrt(area))``. A figure's area is about its total limb
length (2.2 standing heights) times ``w`` plus the head disc, so ``w / (2 * sqrt(area))`` grows
like ``sqrt(w / height)``; over the drawn figures (width 4-7% of the height) its median is
:data:`WIDTH_TO_SIGMA` = 0.07 (0.065 at 128 x 128, where the 2-pixel minimum width and the fit
to the image weigh in; 10th-90th percentiles 0.056-0.078). That gives :data:`KEYPOINT_SIGMAS`:
0.035 to 0.056, inside COCO's range (0.025 for eyes to 0.107 for hips). OKS = 0.5 at
``d = 1.18 * alpha * w``: about 0.6 limb widths for the head, 0.9 for a knee.
"""

from __future__ import annotations

import math

import numpy as np

from structvision.data.synthetic.scene import Color, ShapeObject, StickFigure

KEYPOINT_NAMES: tuple[str, ...] = (
    "head",
    "neck",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "pelvis",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)
"""The 15 keypoints of a figure, in target order (``keypoints[:, k]`` is ``KEYPOINT_NAMES[k]``).
``head`` is the centre of the head disc; the others are joint centres."""

NUM_KEYPOINTS = len(KEYPOINT_NAMES)

SKELETON: tuple[tuple[int, int], ...] = (
    (1, 0),  # neck - head
    (1, 2),  # neck - left shoulder
    (1, 3),  # neck - right shoulder
    (2, 4),  # left upper arm
    (3, 5),  # right upper arm
    (4, 6),  # left forearm
    (5, 7),  # right forearm
    (1, 8),  # spine: neck - pelvis
    (8, 9),  # pelvis - left hip
    (8, 10),  # pelvis - right hip
    (9, 11),  # left thigh
    (10, 12),  # right thigh
    (11, 13),  # left shin
    (12, 14),  # right shin
)
"""Limbs as 0-based keypoint index pairs: a tree over all keypoints, and exactly the capsules
that are drawn (COCO files store it 1-based)."""

FLIP_PAIRS: tuple[tuple[int, int], ...] = ((2, 3), (4, 5), (6, 7), (9, 10), (11, 12), (13, 14))
"""Keypoint index pairs that swap under a horizontal flip (left/right)."""

FLIP_INDEX: tuple[int, ...] = tuple(
    dict([*FLIP_PAIRS, *((j, i) for i, j in FLIP_PAIRS)]).get(k, k) for k in range(NUM_KEYPOINTS)
)
"""The flip as a permutation: ``flipped[:, k] = mirrored[:, FLIP_INDEX[k]]``."""

WIDTH_TO_SIGMA = 0.07
"""Median of ``limb_width / (2 * sqrt(area))`` over unoccluded, untruncated figures."""

_LOCALISATION_IN_WIDTHS: tuple[float, ...] = (
    0.5,  # head: centre of a disc
    0.5,  # neck: head line, spine and shoulder bar meet
    0.6,  # left_shoulder: corner of shoulder bar and upper arm
    0.6,  # right_shoulder
    0.8,  # left_elbow: invisible when the arm is straight
    0.8,  # right_elbow
    0.7,  # left_wrist: half a width inside the limb's round tip
    0.7,  # right_wrist
    0.5,  # pelvis: spine and hip bar meet
    0.6,  # left_hip: corner of hip bar and thigh
    0.6,  # right_hip
    0.8,  # left_knee: invisible when the leg is straight
    0.8,  # right_knee
    0.7,  # left_ankle: half a width inside the limb's round tip
    0.7,  # right_ankle
)

KEYPOINT_SIGMAS: tuple[float, ...] = tuple(
    round(alpha * WIDTH_TO_SIGMA, 4) for alpha in _LOCALISATION_IN_WIDTHS
)
"""Per-keypoint OKS sigmas (pycocotools' ``kpt_oks_sigmas``), in :data:`KEYPOINT_NAMES` order;
derived in the module docstring."""

MIN_LIMB_WIDTH = 2.0
"""Narrowest limb, pixels: with a limb radius of at least 1 pixel the pixel centre nearest to a
joint (at most 0.71 pixels away) is inside the limb, so every keypoint's pixel is painted."""

# Body proportions, fractions of the standing height (head top to ankle joint ~ 1).
_HEAD_RADIUS = (0.065, 0.085)
_LIMB_WIDTH = (0.04, 0.07)
_NECK_TO_HEAD = 0.11
_TORSO = 0.32  # neck to pelvis
_SHOULDER = (0.10, 0.03)  # neck to left shoulder in the torso frame (x out, y down)
_HIP = (0.06, 0.0)  # pelvis to left hip, upright frame
_UPPER_ARM, _FOREARM, _THIGH, _SHIN = 0.17, 0.16, 0.25, 0.24
_PROPORTION_JITTER = 0.1  # each length is scaled by a factor in [0.9, 1.1]

# Joint angles, degrees from "down" in the parent's frame, positive away from the body's
# midline; child angles are relative to the parent limb.
_TORSO_TILT = (-20.0, 20.0)
_HEAD_TILT = (-25.0, 25.0)
_SHOULDER_ANGLE = (-30.0, 175.0)
_ELBOW_ANGLE = (-130.0, 130.0)
_HIP_ANGLE = (-20.0, 70.0)
_KNEE_ANGLE = (-70.0, 50.0)
_UPRIGHT_PROBABILITY = 0.8  # otherwise the figure may lie or stand on its head
_UPRIGHT_TILT = 25.0
_TRUNCATION_MARGIN = 0.35  # a truncated figure may leave this fraction of its extent outside

_NUM_POSE_DRAWS = 18


def _uniform(u: float, bounds: tuple[float, float]) -> float:
    return bounds[0] + u * (bounds[1] - bounds[0])


def _direction(angle_deg: float, side: float) -> np.ndarray:
    """Unit ``(x, y)`` at ``angle_deg`` from down (+y), turned towards ``side * x``."""
    angle = math.radians(angle_deg)
    return np.array([side * math.sin(angle), math.cos(angle)])


def sample_pose(rng: np.random.Generator) -> np.ndarray:
    """Keypoints ``(K, 2)`` of a random pose, in units of the standing height.

    The figure's own frame: origin at the pelvis, ``+y`` down (feet), ``+x`` towards the figure's
    left (image right for an upright figure facing the viewer). Lengths get a jitter shared by
    the left and right limb; joint angles are drawn uniformly from plausible ranges.
    """
    u = rng.random(_NUM_POSE_DRAWS)
    jitter = 1.0 + _PROPORTION_JITTER * (2.0 * u[:8] - 1.0)  # (8,)
    head_len, torso, upper_arm, forearm = jitter[:4] * (_NECK_TO_HEAD, _TORSO, _UPPER_ARM, _FOREARM)
    thigh, shin = jitter[4:6] * (_THIGH, _SHIN)
    shoulder = jitter[6] * np.asarray(_SHOULDER)
    hip_x = jitter[7] * _HIP[0]
    tilt = math.radians(_uniform(u[8], _TORSO_TILT))
    # torso frame: axes (x, y) of the upper body, tilted by ``tilt`` from the upright frame
    axes = np.array([[math.cos(tilt), -math.sin(tilt)], [math.sin(tilt), math.cos(tilt)]])
    points = np.zeros((NUM_KEYPOINTS, 2))
    points[1] = -torso * axes[1]  # neck above the pelvis
    points[0] = points[1] + head_len * (-_direction(_uniform(u[9], _HEAD_TILT), 1.0) @ axes)
    for side, (sh, el, wr), (u_sh, u_el) in (
        (1.0, (2, 4, 6), (u[10], u[11])),
        (-1.0, (3, 5, 7), (u[12], u[13])),
    ):
        upper_angle = _uniform(u_sh, _SHOULDER_ANGLE)
        points[sh] = points[1] + np.array([side * shoulder[0], shoulder[1]]) @ axes
        points[el] = points[sh] + upper_arm * (_direction(upper_angle, side) @ axes)
        fore_angle = upper_angle + _uniform(u_el, _ELBOW_ANGLE)
        points[wr] = points[el] + forearm * (_direction(fore_angle, side) @ axes)
    for side, (hp, kn, an), (u_hp, u_kn) in (
        (1.0, (9, 11, 13), (u[14], u[15])),
        (-1.0, (10, 12, 14), (u[16], u[17])),
    ):
        thigh_angle = _uniform(u_hp, _HIP_ANGLE)
        points[hp] = np.array([side * hip_x, _HIP[1]])
        points[kn] = points[hp] + thigh * _direction(thigh_angle, side)
        points[an] = points[kn] + shin * _direction(thigh_angle + _uniform(u_kn, _KNEE_ANGLE), side)
    return points


def figure_extent(keypoints: np.ndarray, *, limb_width: float, head_radius: float) -> np.ndarray:
    """``[x_min, y_min, x_max, y_max]`` of the painted figure (keypoints ``(K, 2)``, pixels)."""
    pad = np.full(len(keypoints), 0.5 * limb_width)  # (K,)
    pad[0] = max(pad[0], head_radius)
    return np.concatenate([(keypoints - pad[:, None]).min(0), (keypoints + pad[:, None]).max(0)])


def sample_figure(
    rng: np.random.Generator,
    *,
    image_size: tuple[int, int],
    height: float,
    label: int,
    color: Color,
    truncation: float,
) -> StickFigure:
    """A figure in a random pose, rotation, width and place.

    Args:
        rng: the sample's generator.
        image_size: ``(height, width)`` of the image, pixels.
        height: standing height (head top to ankles), pixels; the figure is scaled down when
            its posed extent does not fit in the image.
        label: class id of the figure.
        color: RGB fill colour.
        truncation: probability that up to 35% of the figure's extent (each way) may fall
            outside the image (its keypoints there get ``v = 0``).
    """
    image_h, image_w = image_size
    u = rng.random(7)
    pose = sample_pose(rng)  # (K, 2), unit height
    if u[0] < _UPRIGHT_PROBABILITY:
        rotation = math.radians(_uniform(u[1], (-_UPRIGHT_TILT, _UPRIGHT_TILT)))
    else:
        rotation = _uniform(u[1], (-math.pi, math.pi))
    cos_r, sin_r = math.cos(rotation), math.sin(rotation)
    rotated = pose @ np.array([[cos_r, sin_r], [-sin_r, cos_r]])  # (K, 2), +x turns to +y
    width_fraction = _uniform(u[2], _LIMB_WIDTH)
    radius_fraction = _uniform(u[3], _HEAD_RADIUS)
    margin = _TRUNCATION_MARGIN if u[4] < truncation else 0.0
    unit = figure_extent(rotated, limb_width=width_fraction, head_radius=radius_fraction)
    size = unit[2:] - unit[:2]  # (2,) x and y extent per unit height
    room = np.array([image_w, image_h]) / size  # (2,) tallest figure that fits each way
    scale = min(height, float(room.min()))
    limb_width = max(width_fraction * scale, MIN_LIMB_WIDTH)
    head_radius = max(radius_fraction * scale, limb_width)
    points = rotated * scale  # (K, 2), origin at the pelvis
    low, high = np.split(figure_extent(points, limb_width=limb_width, head_radius=head_radius), 2)
    slack = margin * (high - low)  # (2,) how far the extent may leave the image
    first = -low - slack
    last = np.array([image_w, image_h]) - high + slack
    centre = np.where(first <= last, first + u[5:7] * (last - first), 0.5 * (first + last))
    return StickFigure(
        label=label,
        keypoints=tuple(map(tuple, (points + centre).tolist())),
        limb_width=limb_width,
        head_radius=head_radius,
        color=color,
    )


def keypoint_targets(
    objects: tuple[ShapeObject | StickFigure, ...],
    instance_map: np.ndarray,
    *,
    object_index: np.ndarray,
) -> np.ndarray:
    """COCO keypoints ``(N, K, 3)`` float32 ``(x, y, v)`` of the objects ``object_index``.

    Args:
        objects: the scene's objects in z-order.
        instance_map: ``(H, W)`` uint8, ``k + 1`` where ``objects[k]`` is visible.
        object_index: ``(N,)`` positions in ``objects`` of the ground-truth instances.

    Returns:
        Per instance: for a figure, ``v = 2`` where the keypoint's pixel shows the figure,
        ``v = 1`` where it is inside the image but covered, ``(0, 0, 0)`` outside the image;
        for any other object, zeros (torchvision's keypoint R-CNN wants keypoints for every
        box; ``v = 0`` points are ignored by its loss and by COCO evaluation).
    """
    height, width = instance_map.shape
    out = np.zeros((len(object_index), NUM_KEYPOINTS, 3), dtype=np.float32)
    for row, k in enumerate(np.asarray(object_index).tolist()):
        figure = objects[k]
        if not isinstance(figure, StickFigure):
            continue
        # decide visibility on the float32 values that the target stores
        xy = np.asarray(figure.keypoints, dtype=np.float32)  # (K, 2)
        inside = (xy[:, 0] >= 0) & (xy[:, 0] < width) & (xy[:, 1] >= 0) & (xy[:, 1] < height)
        cols = np.clip(np.floor(xy[:, 0]).astype(np.int64), 0, width - 1)
        rows = np.clip(np.floor(xy[:, 1]).astype(np.int64), 0, height - 1)
        shown = instance_map[rows, cols] == k + 1  # (K,)
        out[row, :, :2] = np.where(inside[:, None], xy, 0.0)
        out[row, :, 2] = np.where(inside, np.where(shown, 2.0, 1.0), 0.0)
    return out


def person_category(category_id: int) -> dict[str, object]:
    """The COCO category of figures: names of the keypoints and the 1-based skeleton."""
    return {
        "id": category_id,
        "name": "person",
        "supercategory": "person",
        "keypoints": list(KEYPOINT_NAMES),
        "skeleton": [[i + 1, j + 1] for i, j in SKELETON],
    }
