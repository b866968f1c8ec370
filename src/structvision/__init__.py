"""structvision: structured prediction in computer vision.

Boxes, instance masks, keypoints, per-pixel labels refined by a dense CRF, tracks, depth and
flow — the classic systems of the field as one library and command-line tool.
"""

__version__ = "0.1.0"


def load(path, *, score_threshold: float = 0.5, tta: bool = False, crf=None):
    """A trained model as a predictor: ``structvision.load(RUN_OR_CHECKPOINT)``.

    ``predictor(image_or_path_or_list)`` returns one prediction dict per image in its own pixel
    coordinates; ``predictor.draw(image)`` the overlay. See
    :func:`structvision.tasks.predictor.load`.
    """
    from structvision.tasks.predictor import load as load_predictor

    return load_predictor(path, score_threshold=score_threshold, tta=tta, crf=crf)
