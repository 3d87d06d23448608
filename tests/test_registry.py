from __future__ import annotations

import pytest

from dlx.errors import DlxError
from dlx.registry import Registry


def test_register_and_get() -> None:
    reg: Registry = Registry("widget")

    @reg.register("alpha")
    def alpha() -> int:
        return 1

    assert reg.get("alpha") is alpha
    assert "alpha" in reg and "beta" not in reg
    assert reg.names() == ["alpha"]


def test_duplicate_name_is_an_error() -> None:
    reg: Registry = Registry("widget")
    reg.register("alpha")(lambda: 1)
    with pytest.raises(ValueError, match="duplicate widget name 'alpha'"):
        reg.register("alpha")(lambda: 2)


def test_unknown_name_lists_valid_and_suggests_closest() -> None:
    reg: Registry = Registry("widget")
    for name in ("resnet", "vgg", "lenet5"):
        reg.register(name)(lambda: None)
    with pytest.raises(DlxError) as e:
        reg.get("resnt")
    assert str(e.value) == "unknown widget 'resnt'; did you mean 'resnet'? valid: lenet5, resnet, vgg"
    with pytest.raises(DlxError) as e:
        reg.get("zzzzzz")
    assert str(e.value) == "unknown widget 'zzzzzz'; valid: lenet5, resnet, vgg"


def test_real_registries_are_populated() -> None:
    from dlx.init import INITIALIZERS
    from dlx.models import MODELS
    from dlx.optim import OPTIMIZERS
    from dlx.schedule import SCHEDULES

    assert {"deep_cnn", "mlp", "lenet5"} <= set(MODELS.names())
    assert set(OPTIMIZERS.names()) >= {"sgd", "momentum", "nesterov", "adagrad", "adadelta", "rmsprop", "adam", "adamw"}
    assert set(INITIALIZERS.names()) >= {"uniform", "normal", "xavier_uniform", "xavier_normal", "he_uniform",
                                          "he_normal", "orthogonal"}  # fmt: skip
    assert set(SCHEDULES.names()) >= {"none", "step", "multistep", "exponential", "cosine", "onecycle", "plateau"}
