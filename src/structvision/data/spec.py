"""Data specifications: the ``--data SPEC`` strings of the command line.

A SPEC is either a built-in generator with optional ``key=value`` settings,

    shapes
    shapes:seed=3,image_size=160,max_objects=8
    shapes:figures=true       shapes plus a "person" class of stick figures with keypoints
    shapes-pose               stick figures only, for keypoint (pose) training

or a path to data on disk in a standard format:

    path/to/folder            a folder holding ``annotations.json`` (and ``images/``)
    path/to/instances.json    a COCO annotation file (images found as CocoDataset documents)
    path/to/data:skip_invalid=true
                              settings after the path go to the reader: skip bad records
                              (each one is warned about) instead of refusing the dataset
    path/to/VOC2007           a Pascal VOC folder (Annotations/, JPEGImages/, ImageSets/Main/),
                              or a VOCdevkit folder holding one; the split picks the image set
    path/to/kitti/training    a KITTI stereo 2015 folder (image_2/, image_3/, disp_occ_0/, ...)
    path/to/middlebury        Middlebury 2014 scenes (folders with im0.png, im1.png, disp0.pfm)
    path/to/Sintel            optical flow: MPI-Sintel (training/clean, flow/, occlusions/)
    path/to/kitti/training    KITTI flow 2015 (image_2/ *_10.png, *_11.png, flow_occ/, flow_noc/)
    path/to/FlyingChairs      FlyingChairs (data/*_img1.ppm, *_flow.flo) or Middlebury flow
                              (other-data/, other-gt-flow/); settings: Sintel pass_name=final
    path/to/MIT               MIT intrinsic images (folders with original.png, reflectance.png,
                              shading.png), or IIW photos (NNNN.png with NNNN.json judgements)
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

__all__ = ["DataSpec", "build_dataset", "parse_spec", "parse_value"]

#: Number of images in a generator split when the SPEC does not say ``num_images=``.
DEFAULT_NUM_IMAGES = {"train": 100_000, "val": 500}


@dataclass(frozen=True)
class DataSpec:
    """A parsed SPEC: ``kind`` is ``"generator"``, ``"coco"``, ``"voc"``, ``"kitti_stereo"``,
    ``"middlebury"``, a flow data set (``"sintel"``, ``"kitti_flow"``, ``"flying_chairs"``,
    ``"middlebury_flow"``) or an intrinsic-image one (``"mit_intrinsic"``, ``"iiw"``); tracking
    folders are read with ``modality="tracking"``. A KITTI 2015 folder with both stereo and flow ground truth is
    ``"kitti_stereo"``; ``build_dataset(..., modality="flow")`` reads its flow instead."""

    kind: str
    name: str
    options: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def __str__(self) -> str:
        settings = ",".join(f"{k}={v}" for k, v in self.options.items())
        head = self.name if self.kind == "generator" else str(self.path)
        return f"{head}:{settings}" if settings else head


def parse_value(text: str) -> Any:
    """``3`` -> int, ``0.5`` -> float, ``true``/``false`` -> bool, ``(1,2)`` -> tuple, else str."""
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _generators() -> dict[str, type]:
    from structvision.data.synthetic import GENERATORS

    return GENERATORS


def _is_voc_folder(path: Path) -> bool:
    candidates = [path, *(p for p in path.glob("VOC*") if p.is_dir())]
    return any((c / "Annotations").is_dir() and (c / "JPEGImages").is_dir() for c in candidates)


def _path_and_settings(spec: str) -> tuple[Path, dict[str, Any]]:
    """``path/to/data:skip_invalid=true`` -> ``(Path("path/to/data"), {"skip_invalid": True})``;
    a path that does not exist raises ``ValueError``."""
    path, options = Path(spec).expanduser(), {}
    if not path.exists() and ":" in spec:
        head, _, settings = spec.rpartition(":")
        if Path(head).expanduser().exists():
            path, options = Path(head).expanduser(), _parse_settings(spec, settings)
    if not path.exists():
        known = ", ".join(sorted(_generators()))
        raise ValueError(
            f"data SPEC {spec!r} is neither a built-in generator ({known}) nor an existing path"
        )
    return path, options


def _flow_spec(spec: str) -> DataSpec:
    """A SPEC read as optical-flow data: a generator, or a flow folder of a known layout."""
    if spec.partition(":")[0] in _generators():
        return parse_spec(spec)
    from structvision.data.flow import detect_flow_folder

    path, options = _path_and_settings(spec)
    kind = detect_flow_folder(path)
    if kind is None:
        raise ValueError(
            f"data SPEC {spec!r}: {path} is not an optical-flow folder (MPI-Sintel, KITTI flow "
            "2015, FlyingChairs or Middlebury flow)"
        )
    return DataSpec(kind=kind, name=kind, options=options, path=path)


def _intrinsic_kind(path: Path) -> str | None:
    """``"mit_intrinsic"`` (folders with original.png), ``"iiw"`` (NNNN.png + NNNN.json) or None."""
    if not path.is_dir():
        return None
    if (path / "original.png").is_file() or any(
        (p / "original.png").is_file() for p in path.iterdir() if p.is_dir()
    ):
        return "mit_intrinsic"
    if (
        any(p.with_suffix(".png").is_file() for p in path.glob("*.json"))
        and not (path / "annotations.json").is_file()
    ):
        return "iiw"
    return None


def _tracking_dataset(spec: str) -> Dataset:
    """An OTB, LaSOT or GOT-10k folder (``modality="tracking"``)."""
    from structvision.data.tracking import TRACKING_READERS, detect_tracking_folder

    path, options = _path_and_settings(spec)
    kind = detect_tracking_folder(path)
    if kind is None:
        raise ValueError(
            f"data SPEC {spec!r}: {path} is not a tracking benchmark folder (OTB sequence folders "
            "with img/ and groundtruth_rect.txt, LaSOT or GOT-10k)"
        )
    return _construct(TRACKING_READERS[kind], DataSpec(kind, kind, options, path), path, **options)


def parse_spec(spec: str) -> DataSpec:
    """Parse a SPEC string; an unknown generator or missing path raises ``ValueError``."""
    if not spec or not spec.strip():
        raise ValueError("data SPEC is empty: give a generator name such as 'shapes' or a path")
    name, _, settings = spec.partition(":")
    generators = _generators()
    if name in generators:
        return DataSpec(kind="generator", name=name, options=_parse_settings(spec, settings))
    path, options = _path_and_settings(spec)
    if path.is_dir() and _is_voc_folder(path):
        return DataSpec(kind="voc", name="voc", options=options, path=path)
    from structvision.data.flow import detect_flow_folder

    flow_kind = detect_flow_folder(path)
    is_stereo = path.is_dir() and (path / "image_2").is_dir() and (path / "image_3").is_dir()
    if flow_kind is not None and not is_stereo:
        return DataSpec(kind=flow_kind, name=flow_kind, options=options, path=path)
    if is_stereo:
        return DataSpec(kind="kitti_stereo", name="kitti_stereo", options=options, path=path)
    intrinsic_kind = _intrinsic_kind(path)
    if intrinsic_kind is not None:
        return DataSpec(kind=intrinsic_kind, name=intrinsic_kind, options=options, path=path)
    if path.is_dir() and (
        (path / "im0.png").is_file() or any((p / "im0.png").is_file() for p in path.iterdir())
    ):
        return DataSpec(kind="middlebury", name="middlebury", options=options, path=path)
    if path.is_dir():
        annotations = path / "annotations.json"
        if not annotations.is_file():
            raise ValueError(
                f"data folder {path} has no annotations.json; pass the COCO annotation file itself"
            )
        path = annotations
    if path.suffix.lower() != ".json":
        raise ValueError(f"data file {path} is not a COCO .json annotation file")
    return DataSpec(kind="coco", name="coco", options=options, path=path)


def _top_level_parts(settings: str) -> list[str]:
    """``"a=1,size=(32,64)"`` -> ``["a=1", "size=(32,64)"]``: commas inside brackets stay."""
    parts, depth, start = [], 0, 0
    for position, char in enumerate(settings):
        depth += (char in "([{") - (char in ")]}")
        if char == "," and depth == 0:
            parts.append(settings[start:position])
            start = position + 1
    return [*parts, settings[start:]]


def _parse_settings(spec: str, settings: str) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in _top_level_parts(settings))):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"data SPEC {spec!r}: setting {item!r} is not of the form key=value")
        options[key.strip()] = parse_value(value.strip())
    return options


def build_dataset(
    spec: str | DataSpec, *, split: str = "train", modality: str | None = None, **kwargs: Any
) -> Dataset:
    """Build the dataset a SPEC names.

    For a generator, ``split`` selects the disjoint ``train``/``val`` sample streams and the
    SPEC's settings are passed to the generator (``num_images`` defaults to
    ``DEFAULT_NUM_IMAGES[split]``). For files on disk the split is the file itself. Extra
    keyword arguments (``transforms=``, ...) go to the dataset class. A VOC folder reads the
    ``trainval`` image set for ``train`` and ``test`` for ``val`` (falling back to ``train`` and
    ``val`` where those lists are missing). ``modality="tracking"`` reads an OTB, LaSOT or
    GOT-10k folder as tracking sequences. ``modality="flow"`` reads the optical flow of a
    folder that holds more (a KITTI 2015 folder with stereo and flow ground truth); FlyingChairs
    takes the split from its ``FlyingChairs_train_val.txt``, other flow folders are the split.
    """
    is_generator = (
        spec.kind == "generator"
        if isinstance(spec, DataSpec)
        else spec.partition(":")[0] in _generators()
    )
    if modality == "tracking" and not is_generator:
        return _tracking_dataset(str(spec.path) if isinstance(spec, DataSpec) else spec)
    if isinstance(spec, str):
        spec = _flow_spec(spec) if modality == "flow" else parse_spec(spec)
    elif modality == "flow" and spec.kind != "generator":
        spec = _flow_spec(str(spec.path))
    from structvision.data.flow import FLOW_READERS

    if spec.kind in ("mit_intrinsic", "iiw"):
        from structvision.data.intrinsic import IIWDataset, MITIntrinsicDataset

        reader = MITIntrinsicDataset if spec.kind == "mit_intrinsic" else IIWDataset
        return _construct(reader, spec, spec.path, **spec.options, **kwargs)
    if spec.kind in FLOW_READERS:
        if spec.kind == "flying_chairs":
            kwargs = {"split": split, **kwargs}
        return _construct(FLOW_READERS[spec.kind], spec, spec.path, **spec.options, **kwargs)
    if spec.kind == "generator":
        options = {"num_images": DEFAULT_NUM_IMAGES.get(split, 500), **spec.options}
        generator = _generators()[spec.name]
        try:
            return generator(split=split, **options, **kwargs)
        except (TypeError, ValueError) as error:
            raise ValueError(f"data SPEC {spec}: {error}") from error
    if spec.kind == "voc":
        from structvision.data.voc import VOCDetection, resolve_voc_root

        root = resolve_voc_root(spec.path)
        image_set = {"train": "trainval", "val": "test"}.get(split, split)
        if not (root / "ImageSets" / "Main" / f"{image_set}.txt").is_file():
            image_set = {"trainval": "train", "test": "val"}.get(image_set, image_set)
        return _construct(VOCDetection, spec, root, image_set=image_set, **spec.options, **kwargs)
    if spec.kind in ("kitti_stereo", "middlebury"):  # the folder is the split
        from structvision.data.stereo import KittiStereoDataset, MiddleburyDataset

        reader = KittiStereoDataset if spec.kind == "kitti_stereo" else MiddleburyDataset
        return _construct(reader, spec, spec.path, **spec.options, **kwargs)
    from structvision.data.coco import CocoDataset

    return _construct(CocoDataset, spec, spec.path, **spec.options, **kwargs)


def _construct(cls: type, spec: DataSpec, *args: Any, **kwargs: Any) -> Dataset:
    try:
        return cls(*args, **kwargs)
    except TypeError as error:  # an unknown setting in the SPEC
        raise ValueError(f"data SPEC {spec}: {error}") from error
