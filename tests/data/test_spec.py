import json

import pytest
import torch

from structvision.data.spec import DEFAULT_NUM_IMAGES, build_dataset, parse_spec, parse_value


def test_parse_generator_spec_with_settings():
    spec = parse_spec("shapes:seed=3,image_size=96,max_occlusion=0.3")
    assert spec.kind == "generator" and spec.name == "shapes"
    assert spec.options == {"seed": 3, "image_size": 96, "max_occlusion": 0.3}
    assert str(spec) == "shapes:seed=3,image_size=96,max_occlusion=0.3"
    assert parse_spec("shapes").options == {}


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("3", 3),
        ("0.5", 0.5),
        ("true", True),
        ("False", False),
        ("none", None),
        ("(1, 2)", (1, 2)),
        ("cosine", "cosine"),
        ("[10, 20]", [10, 20]),
    ],
)
def test_parse_value(text, value):
    assert parse_value(text) == value


def test_bad_specs_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        parse_spec("  ")
    with pytest.raises(ValueError, match="key=value"):
        parse_spec("shapes:seed")
    with pytest.raises(ValueError, match="neither a built-in generator"):
        parse_spec(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match=r"no annotations\.json"):
        parse_spec(str(tmp_path))
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(ValueError, match=r"not a COCO \.json"):
        parse_spec(str(tmp_path / "a.txt"))
    with pytest.raises(ValueError, match="shapes"):
        build_dataset("shapes:no_such_setting=1", split="val")


def test_generator_splits_are_disjoint_and_sized():
    train = build_dataset("shapes:image_size=64,num_images=4", split="train")
    val = build_dataset("shapes:image_size=64,num_images=4", split="val")
    assert len(train) == 4 and len(val) == 4
    assert len(build_dataset("shapes:image_size=64", split="val")) == DEFAULT_NUM_IMAGES["val"]
    assert not torch.equal(train[0][0], val[0][0])
    assert train[0][0].shape == (3, 64, 64)


def test_folder_spec_resolves_annotations_file(tmp_path):
    (tmp_path / "annotations.json").write_text(
        json.dumps({"images": [], "annotations": [], "categories": []})
    )
    spec = parse_spec(str(tmp_path))
    assert spec.kind == "coco" and spec.path == tmp_path / "annotations.json"
    assert str(spec) == str(tmp_path / "annotations.json")


def test_voc_folder_spec_reads_the_split_image_set(tmp_path):
    import numpy as np
    from PIL import Image

    root = tmp_path / "VOCdevkit" / "VOC2007"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True)
    for name in ("a", "b"):
        Image.fromarray(np.zeros((20, 30, 3), dtype=np.uint8)).save(
            root / "JPEGImages" / f"{name}.jpg"
        )
        (root / "Annotations" / f"{name}.xml").write_text(
            f"<annotation><filename>{name}.jpg</filename><size><width>30</width><height>20</height>"
            "<depth>3</depth></size><object><name>dog</name><difficult>0</difficult>"
            "<bndbox><xmin>2</xmin><ymin>3</ymin><xmax>10</xmax><ymax>12</ymax></bndbox>"
            "</object></annotation>"
        )
    (root / "ImageSets" / "Main" / "train.txt").write_text("a\n")
    (root / "ImageSets" / "Main" / "val.txt").write_text("b\n")
    spec = parse_spec(str(tmp_path / "VOCdevkit"))
    assert spec.kind == "voc"
    train, val = build_dataset(spec, split="train"), build_dataset(spec, split="val")
    assert train.ids == ["a"] and val.ids == ["b"]
    _, target = train[0]
    assert target["boxes"].tolist() == [[1.0, 2.0, 10.0, 12.0]]
    assert train.class_names[target["labels"][0]] == "dog"


def test_settings_may_hold_tuples_with_commas():
    spec = parse_spec("world-flow:num_images=2,image_size=(32,64),seed=3")
    assert spec.options == {"num_images": 2, "image_size": (32, 64), "seed": 3}
    assert build_dataset(spec, split="val")[0][0].shape == (3, 32, 64)
