import json

import pytest

from structvision.engine import TrainConfig


def test_round_trip_through_json():
    config = TrainConfig(
        max_steps=50, schedule="step", step_milestones=[10, 30], clip_grad_norm=2, devices="auto"
    )
    restored = TrainConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert restored == config
    assert isinstance(restored.clip_grad_norm, float)


def test_ints_accepted_for_float_fields():
    config = TrainConfig(lr=1, weight_decay=0)
    assert isinstance(config.lr, float) and config.lr == 1.0


def test_unknown_keys_are_named():
    values = {**TrainConfig().to_dict(), "learning_rate": 0.1, "epochs": 3}
    with pytest.raises(ValueError, match=r"\['epochs', 'learning_rate'\]"):
        TrainConfig.from_dict(values)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"optimizer": "adam"}, "optimizer"),
        ({"schedule": "poly"}, "schedule"),
        ({"precision": "64"}, "precision"),
        ({"max_steps": 0}, "max_steps"),
        ({"lr": -1.0}, "lr"),
        ({"step_milestones": [30, 10]}, "step_milestones"),
        ({"clip_grad_norm": 0.0}, "clip_grad_norm"),
        ({"batch_size": 2.5}, "batch_size"),
        ({"progress": "yes"}, "progress"),
        ({"devices": 0}, "devices"),
    ],
)
def test_invalid_values_name_the_field(changes, field):
    with pytest.raises((ValueError, TypeError), match=field):
        TrainConfig(**changes)


def test_replace_validates():
    assert TrainConfig().replace(lr=0.5).lr == 0.5
    with pytest.raises(ValueError, match="unknown key"):
        TrainConfig().replace(lrr=0.5)
