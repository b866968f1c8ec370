import pytest
import torch

from structvision.models.segmentation import fcn_small
from structvision.models.segmentation.postprocess import (
    CRFRefiner,
    check_crf_parameters,
    refine_with_crf,
)
from structvision.ops import dense_crf
from structvision.tasks import RECIPES
from structvision.tasks.registry import RecipeError
from structvision.tasks.run import _with_crf


def _two_region_image(height=20, width=24):
    """Left half dark red, right half light blue: ``(3, H, W)`` in [0, 1]."""
    image = torch.zeros(3, height, width)
    image[:, :, : width // 2] = torch.tensor([0.6, 0.1, 0.1]).reshape(3, 1, 1)
    image[:, :, width // 2 :] = torch.tensor([0.2, 0.5, 0.9]).reshape(3, 1, 1)
    return image


def test_refiner_equals_dense_crf_on_the_softmax_of_the_logits():
    torch.manual_seed(0)
    model = fcn_small(num_classes=3, variant="8s", width=8).eval()
    images = [torch.rand(3, 21, 30), torch.rand(3, 17, 25)]
    params = {"bilateral_sxy": 10.0, "iterations": 4}
    refined = CRFRefiner(model, **params).eval()
    with torch.no_grad():
        plain = model(images)
        out = refined(images)
    for image, before, after in zip(images, plain, out, strict=True):
        expected = dense_crf(image, before["semantic_logits"].softmax(0), **params)
        torch.testing.assert_close(after["semantic_probs"], expected)
        assert torch.equal(after["semantic"], expected.argmax(0))
        assert torch.equal(after["semantic_logits"], before["semantic_logits"])


def test_refiner_trains_like_the_wrapped_model():
    torch.manual_seed(0)
    model = fcn_small(num_classes=3, variant="32s", width=8)
    images = torch.rand(2, 3, 32, 32)
    targets = [{"semantic": torch.randint(0, 3, (32, 32))} for _ in range(2)]
    torch.manual_seed(1)
    direct = model.train()(images, targets)
    torch.manual_seed(1)
    wrapped = CRFRefiner(model).train()(images, targets)
    assert direct.keys() == wrapped.keys() == {"loss_semantic"}
    torch.testing.assert_close(direct["loss_semantic"], wrapped["loss_semantic"])


def test_crf_cleans_noisy_labels_inside_uniform_regions():
    torch.manual_seed(0)
    image = _two_region_image()
    truth = torch.zeros(20, 24, dtype=torch.int64)
    truth[:, 12:] = 1
    probs = torch.full((2, 20, 24), 0.3)
    probs[truth.unsqueeze(0) == torch.arange(2).reshape(2, 1, 1)] = 0.7
    flipped = torch.rand(20, 24) < 0.2  # 20% of the pixels favour the wrong class
    probs[:, flipped] = probs[:, flipped].flip(0)
    prediction = {"semantic_logits": probs.log(), "semantic": probs.argmax(0)}
    before = (prediction["semantic"] == truth).float().mean()
    after = refine_with_crf(image, prediction, bilateral_sxy=10.0, bilateral_srgb=13.0)
    assert before < 0.85
    assert (after["semantic"] == truth).all()


def test_bad_parameters_and_predictions_are_named():
    with pytest.raises(ValueError, match="'sxy' is unknown"):
        check_crf_parameters({"sxy": 3.0})
    with pytest.raises(ValueError, match=r"iterations=.*must be a number"):
        check_crf_parameters({"iterations": "ten"})
    with pytest.raises(ValueError, match=r"iterations=2\.5 must be a whole number"):
        check_crf_parameters({"iterations": 2.5})
    for bad in (-1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=r"iterations=.* must be a whole number >= 0"):
            check_crf_parameters({"iterations": bad})
    with pytest.raises(ValueError, match="no 'semantic_logits'"):
        refine_with_crf(torch.rand(3, 4, 4), {"semantic": torch.zeros(4, 4)})
    with pytest.raises(ValueError, match=r"\(C, H, W\) with the image's"):
        refine_with_crf(torch.rand(3, 4, 4), {"semantic_logits": torch.zeros(2, 4, 5)})


def test_crf_on_a_detection_recipe_is_refused():
    model = torch.nn.Identity()
    with pytest.raises(RecipeError, match="recipe 'faster_rcnn' predicts none"):
        _with_crf(model, RECIPES["faster_rcnn"], {})
    assert _with_crf(model, RECIPES["faster_rcnn"], None) is model
    assert isinstance(_with_crf(model, RECIPES["fcn8s"], {}), CRFRefiner)
