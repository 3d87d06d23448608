"""The model zoo, driven by the registry: every registered model builds, runs, learns and counts right."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from dlx.errors import DlxError
from dlx.init import INITIALIZERS, initialize
from dlx.modelinfo import count_parameters, flops_per_image, layer_table
from dlx.models import MODELS, RESERVED_MODEL_ARGS, build_model
from dlx.models.layers import ZERO_INIT_ATTR, AuxOutput, StochasticPool2d, pool_layer

NAMES = MODELS.names()
GEOMETRIES = [(1, 28), (3, 32)]  # MNIST-like and CIFAR-like inputs
NUM_CLASSES = 7  # not 10, so a hard-coded class count would show

# Full-size networks at 32 px take seconds per step on 2 cores; the test sizes keep every structural feature
# (all stages, blocks, branches, shortcuts) and shrink channels, plus blocks for the deepest ones.
TEST_SIZE: dict[str, dict[str, float]] = {
    "deep_cnn": {"width": 1.0},
    "lenet5": {"width": 1.0},
    "mlp": {"width": 1.0},
    "densenet121": {"width": 0.25, "depth": 0.25},
    "densenet_cifar": {"width": 0.5, "depth": 0.25},
    "vgg13": {"width": 0.125},
    "vgg16": {"width": 0.125},
    "vgg19": {"width": 0.125},
    "resnet110": {"width": 0.5},
    "resnet34": {"width": 0.125},
    "resnet50": {"width": 0.125},
    "googlenet": {"width": 0.125},
    "dpn": {"width": 0.125},
}
DEFAULT_TEST_SIZE = {"width": 0.25}


# Models that cannot be built from the standard keywords alone get these arguments in every test here.
EXAMPLE_ARGS: dict[str, dict[str, Any]] = {
    "sequential": {"layers": [{"conv": {"out": 8, "padding": 1}}, "bn", {"act": "relu"}, "pool", "flatten", "linear"]},
}
# Models whose layer count is fixed by their own arguments: depth must stay 1 for them.
FIXED_DEPTH = {"sequential"}


# These tests run thousands of tiny ops (batch 2, narrow layers): one thread is as fast as two.
pytestmark = pytest.mark.usefixtures("one_thread")


def small(name: str, in_channels: int = 1, image_size: int = 28, **args: Any) -> nn.Module:
    size = TEST_SIZE.get(name, DEFAULT_TEST_SIZE)
    args = {**EXAMPLE_ARGS.get(name, {}), **args}
    return build_model(
        name, in_channels=in_channels, num_classes=NUM_CLASSES, image_size=image_size, **size, args=args or None
    )


def n_params(name: str, **kwargs: Any) -> int:
    if name in EXAMPLE_ARGS:
        kwargs["args"] = {**EXAMPLE_ARGS[name], **kwargs.get("args", {})}
    # Parameters on the meta device have shapes but no storage: counting costs nothing, even for VGG's 138M.
    with torch.device("meta"):
        return count_parameters(build_model(name, **kwargs))


# ---------------------------------------------------------------------------- every model


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: f"{g[0]}x{g[1]}")
@pytest.mark.parametrize("name", NAMES)
def test_forward_backward_every_model(name: str, geometry: tuple[int, int]) -> None:
    in_channels, image_size = geometry
    torch.manual_seed(0)
    model = small(name, in_channels, image_size)
    model.train()
    x = torch.randn(2, in_channels, image_size, image_size)
    out = model(x)
    assert isinstance(out, torch.Tensor), "with default options a model returns plain logits in training mode"
    assert out.shape == (2, NUM_CLASSES)
    assert torch.isfinite(out).all()
    F.cross_entropy(out, torch.tensor([0, NUM_CLASSES - 1])).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{pname} is not used by forward"
        assert torch.isfinite(p.grad).all(), pname
    model.eval()
    with torch.no_grad():
        logits = model(x)
    assert logits.shape == (2, NUM_CLASSES) and torch.isfinite(logits).all()


@pytest.mark.parametrize("name", NAMES)
def test_factory_follows_the_keyword_convention(name: str) -> None:
    factory = MODELS.get(name)
    params = inspect.signature(factory).parameters
    # The config layer checks model.args against this signature, so a **kwargs would let every typo through.
    assert not any(p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) for p in params.values())
    for key in ("in_channels", "num_classes", "image_size", "width", "depth"):
        assert params[key].kind is inspect.Parameter.KEYWORD_ONLY, key
    assert params["width"].default == 1.0 and params["depth"].default == 1.0
    required = {n for n, p in params.items() if p.default is inspect.Parameter.empty}
    assert required <= set(EXAMPLE_ARGS.get(name, {})), f"give {name!r} example arguments in EXAMPLE_ARGS"
    doc = (factory.__doc__ or "").strip()
    assert doc and len(doc.splitlines()[0]) <= 120, "the docstring's first line is the listing's description"
    docs = doc + (inspect.getmodule(factory).__doc__ or "")
    assert "width" in docs and "depth" in docs, "the docstrings say what width and depth mean"


def accepting(keyword: str) -> list[str]:
    return [n for n in NAMES if keyword in inspect.signature(MODELS.get(n)).parameters]


# The book's zoo: the families of this file's tests and the book's own networks.
ZOO = ["alexnet", "deep_cnn", "densenet121", "densenet_cifar", "dpn", "googlenet", "lenet5", "mlp"]
ZOO += [f"vgg{d}" for d in (11, 13, 16, 19)] + [f"resnet{d}" for d in (18, 34, 50, 20, 32, 44, 56, 110)]


def test_the_zoo_is_registered_with_the_common_options() -> None:
    assert set(ZOO) <= set(NAMES)
    cifar_resnets = {f"resnet{d}" for d in (20, 32, 44, 56, 110)}  # no pooling layer besides the global one
    assert set(ZOO) <= set(accepting("activation_name")) & set(accepting("dropout"))
    assert set(ZOO) - {"mlp"} - cifar_resnets <= set(accepting("pool"))
    # DenseNet and DPN have batch norm inside every composite layer (BN-ReLU-Conv), so no switch.
    assert set(ZOO) - {"densenet121", "densenet_cifar", "dpn"} <= set(accepting("batch_norm"))


@pytest.mark.parametrize("name", accepting("activation_name"))
def test_activation_name_reaches_every_layer(name: str) -> None:
    model = small(name, activation_name="tanh")
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())
    assert any(isinstance(m, nn.Tanh) for m in model.modules())


@pytest.mark.parametrize("name", accepting("pool"))
def test_stochastic_pool_option(name: str) -> None:
    torch.manual_seed(0)
    # ImageNet stems have pools even in the ResNet family; the small stem of those has none, so use 72 px there.
    size = 72 if name.startswith(("resnet", "dpn")) else 28
    model = small(name, 1, size, pool="stochastic")
    assert any(isinstance(m, StochasticPool2d) for m in model.modules())
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    x = torch.rand(2, 1, size, size)
    for train in (True, False):
        model.train(train)
        assert torch.isfinite(model(x)).all()


def test_unknown_options_are_one_line_errors() -> None:
    with pytest.raises(DlxError, match="unknown pool 'mean'"):
        small("vgg11", pool="mean")
    with pytest.raises(DlxError, match="unknown activation 'swish'"):
        small("resnet18", activation_name="swish")
    with pytest.raises(DlxError, match="shortcut must be"):
        small("resnet20", shortcut="C")
    assert not RESERVED_MODEL_ARGS & {"pool", "activation_name"}


# ---------------------------------------------------------------------------- parameter counts

IMAGENET = dict(in_channels=3, num_classes=1000, image_size=224)


def torchvision_googlenet() -> nn.Module:
    return torchvision.models.googlenet(aux_logits=False, init_weights=True)


REFERENCE = [
    pytest.param("alexnet", {}, torchvision.models.alexnet, 61_100_840, id="alexnet"),
    pytest.param("vgg11", {}, torchvision.models.vgg11, 132_863_336, id="vgg11"),
    pytest.param("vgg13", {}, torchvision.models.vgg13, 133_047_848, id="vgg13"),
    pytest.param("vgg16", {}, torchvision.models.vgg16, 138_357_544, id="vgg16"),
    pytest.param("vgg19", {}, torchvision.models.vgg19, 143_667_240, id="vgg19"),
    pytest.param("vgg16", {"batch_norm": True}, torchvision.models.vgg16_bn, 138_365_992, id="vgg16_bn"),
    pytest.param("resnet18", {}, torchvision.models.resnet18, 11_689_512, id="resnet18"),
    pytest.param("resnet34", {}, torchvision.models.resnet34, 21_797_672, id="resnet34"),
    pytest.param("resnet50", {}, torchvision.models.resnet50, 25_557_032, id="resnet50"),
    pytest.param("densenet121", {}, torchvision.models.densenet121, 7_978_856, id="densenet121"),
    # torchvision's third inception branch is 3x3 (the paper's is 5x5, our default).
    pytest.param("googlenet", {"args": {"branch3_kernel": 3}}, torchvision_googlenet, 6_624_904, id="googlenet"),
]


@pytest.mark.parametrize(("name", "kwargs", "reference", "count"), REFERENCE)
def test_reference_configuration_is_torchvisions(
    name: str, kwargs: dict[str, Any], reference: Callable[[], nn.Module], count: int
) -> None:
    with torch.device("meta"):
        ours, theirs = build_model(name, **IMAGENET, **kwargs), reference()
    assert count_parameters(ours) == count_parameters(theirs) == count
    # Same names and shapes: the architecture is the same, and torchvision's pretrained weights would load.
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}


def test_googlenet_aux_heads_are_torchvisions() -> None:
    with torch.device("meta"):
        ours = build_model("googlenet", **IMAGENET, args={"aux_logits": True, "branch3_kernel": 3})
        theirs = torchvision.models.googlenet(aux_logits=True, init_weights=True)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}
    assert n_params("googlenet", **IMAGENET) == 7_005_832  # the paper's 5x5 branch


# He et al. 2016, table 6 (CIFAR-10): 0.27M, 0.46M, 0.66M, 0.85M, 1.7M parameters.
CIFAR_RESNETS = [("resnet20", 269_722, 0.27e6), ("resnet32", 464_154, 0.46e6), ("resnet44", 658_586, 0.66e6),
                 ("resnet56", 853_018, 0.85e6), ("resnet110", 1_727_962, 1.7e6)]  # fmt: skip


@pytest.mark.parametrize(("name", "count", "paper"), CIFAR_RESNETS)
def test_cifar_resnets_have_the_papers_parameter_counts(name: str, count: int, paper: float) -> None:
    ours = n_params(name, in_channels=3, num_classes=10, image_size=32)
    assert ours == count
    assert abs(ours - paper) / paper < 0.02


def test_small_networks_have_their_documented_counts() -> None:
    mnist = dict(in_channels=1, num_classes=10, image_size=28)
    cifar = dict(in_channels=3, num_classes=10, image_size=32)
    assert n_params("deep_cnn", **mnist) == 123_552
    assert n_params("deep_cnn", **mnist, args={"pool": "stochastic"}) == 123_552
    assert n_params("lenet5", **mnist) == 61_706
    # DenseNet-BC (L=100, k=12): the paper rounds to 0.8M.
    assert n_params("densenet_cifar", **cifar) == 769_210
    assert n_params("dpn", **cifar) == 11_987_898


def test_deep_cnn_layer_order_is_the_books() -> None:
    model = build_model("deep_cnn", in_channels=1, num_classes=10, image_size=28, args={"pool": "avg"})
    kinds = [type(m).__name__ for m in model.features]
    stage = ["Conv2d", "ReLU", "Conv2d", "ReLU", "AvgPool2d"]
    assert kinds == stage * 3
    shapes = [tuple(p.shape) for p in model.parameters()]
    assert shapes[0] == (16, 1, 3, 3) and shapes[-2] == (10, 50)


@pytest.mark.parametrize("name", NAMES)
def test_width_and_depth_scale_the_parameter_count(name: str) -> None:
    geometry = dict(in_channels=1, num_classes=10, image_size=28)
    narrow, base, wide = (n_params(name, **geometry, width=w) for w in (0.5, 1.0, 2.0))
    assert narrow < base < wide
    if name in FIXED_DEPTH:
        with pytest.raises(DlxError, match="depth"):
            n_params(name, **geometry, depth=2.0)
    else:
        assert n_params(name, **geometry, depth=2.0) > base


# ---------------------------------------------------------------------------- stochastic pooling


def test_stochastic_pool_eval_is_the_probability_weighted_average() -> None:
    # Four 2x2 windows of one 4x4 map.
    x = torch.tensor(
        [
            [1.0, 2.0, -1.0, 2.0],
            [3.0, 0.0, 0.0, 2.0],
            [0.0, 0.0, -1.0, -3.0],
            [0.0, 0.0, -2.0, -2.0],
        ]
    ).reshape(1, 1, 4, 4)
    pool = StochasticPool2d(2).eval()
    expected = torch.tensor(
        [
            [(1 * 1 + 2 * 2 + 3 * 3) / 6, (2 * 2 + 2 * 2) / 4],  # p = a / sum(a); negatives have p = 0
            [0.0, (-1 - 3 - 2 - 2) / 4],  # all zero: 0; no positive value: uniform, the plain mean
        ]
    ).reshape(1, 1, 2, 2)
    torch.testing.assert_close(pool(x), expected)


def test_stochastic_pool_samples_members_in_proportion_to_their_value() -> None:
    torch.manual_seed(0)
    pool = StochasticPool2d(2).train()
    x = torch.randn(4, 3, 9, 8)  # odd height: the last row is dropped, as max pooling does
    out = pool(x)
    assert out.shape == nn.MaxPool2d(2)(x).shape == (4, 3, 4, 4)
    windows = F.unfold(x[:, :, :8].reshape(12, 1, 8, 8), 2, stride=2)  # (12, 4, 16)
    picked = out.reshape(12, 1, 16)
    assert (windows == picked).any(dim=1).all(), "every output is an element of its window"
    has_positive = (windows > 0).any(dim=1)
    assert (picked.squeeze(1)[has_positive] > 0).all(), "an element with probability 0 is never drawn"
    # One window [1, 2, 3, 0] drawn 40,000 times: frequencies 1/6, 2/6, 3/6, 0.
    many = torch.tensor([[1.0, 2.0], [3.0, 0.0]]).expand(40_000, 1, 2, 2)
    draws = pool(many).flatten()
    freq = torch.stack([(draws == v).float().mean() for v in (1.0, 2.0, 3.0, 0.0)])
    torch.testing.assert_close(freq, torch.tensor([1 / 6, 2 / 6, 3 / 6, 0.0]), atol=0.01, rtol=0)


def test_stochastic_pool_all_zero_windows_give_zero() -> None:
    x = torch.zeros(2, 3, 6, 6)
    x[:, :, :2, :2] = 5.0  # one non-zero window per map
    for train in (True, False):
        out = StochasticPool2d(2).train(train)(x)
        assert (out[:, :, 0, 0] == 5.0).all()
        out[:, :, 0, 0] = 0
        assert (out == 0).all()


def test_stochastic_pool_gradients_flow() -> None:
    torch.manual_seed(0)
    x = torch.rand(2, 3, 8, 8, requires_grad=True)
    StochasticPool2d(2).train()(x).sum().backward()
    # Training: like max pooling, exactly the drawn element of each window gets the gradient.
    grad_windows = F.unfold(x.grad.reshape(6, 1, 8, 8), 2, stride=2)
    assert ((grad_windows == 1).sum(dim=1) == 1).all() and ((grad_windows == 0).sum(dim=1) == 3).all()
    x.grad = None
    StochasticPool2d(2).eval()(x).sum().backward()
    assert torch.isfinite(x.grad).all() and (x.grad != 0).all()


@pytest.mark.parametrize(("kernel", "stride", "padding", "ceil"), [(3, 2, 1, False), (3, 2, 0, True), (3, 1, 1, True)])
def test_stochastic_pool_geometry_matches_max_pooling(kernel: int, stride: int, padding: int, ceil: bool) -> None:
    x = -torch.rand(2, 2, 13, 10)  # all negative: only the uniform fallback, which must skip the padding
    pool = StochasticPool2d(kernel, stride, padding, ceil).train()
    out = pool(x)
    assert out.shape == nn.MaxPool2d(kernel, stride, padding, ceil_mode=ceil)(x).shape
    assert torch.isin(out, x).all(), "padded zeros are never drawn"
    assert (pool.eval()(x) < 0).all()


def test_pool_layer_names() -> None:
    assert isinstance(pool_layer("max", 2), nn.MaxPool2d)
    assert isinstance(pool_layer("avg", 2), nn.AvgPool2d)
    assert isinstance(pool_layer("stochastic", 3, 2, padding=1), StochasticPool2d)
    with pytest.raises(ValueError, match="allowed: max, avg, stochastic"):
        pool_layer("median", 2)


@pytest.mark.parametrize("batch_norm", [False, True])
@pytest.mark.parametrize("init", INITIALIZERS.names())
def test_zero_initialized_residual_branches_stay_zero_under_every_initializer(init: str, batch_norm: bool) -> None:
    """resnet20 marks the layer that silences each branch (its last norm, or without norm its last conv)."""
    model = build_model("resnet20", in_channels=1, num_classes=10, image_size=28, batch_norm=batch_norm,
                        args={"zero_init_residual": True})  # fmt: skip
    initialize(model, init, bias=0.1)
    marked = [m for m in model.modules() if getattr(m, ZERO_INIT_ATTR, False)]
    kind = nn.BatchNorm2d if batch_norm else nn.Conv2d
    assert len(marked) == 9 and all(isinstance(m, kind) for m in marked)  # one per basic block: 3 stages x 3
    for m in marked:
        assert not m.weight.any() and (m.bias is None or not m.bias.any()), m


# ---------------------------------------------------------------------------- training behaviour


def test_resnet110_trains() -> None:
    """110 layers learn from the first steps: each residual branch starts at zero (identity blocks)."""
    torch.manual_seed(0)
    model = build_model("resnet110", in_channels=3, num_classes=4, image_size=8, width=0.5)
    # Four classes, each a random colour under noise: learnable in a few steps, unlike pure noise or spatial
    # patterns (which the global average pool maps to nearly the same features for every image).
    y = torch.arange(16) % 4
    x = torch.randn(4, 3, 1, 1)[y] + 0.5 * torch.randn(16, 3, 8, 8)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for _ in range(10):
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.3 * losses[0], losses


def test_googlenet_aux_protocol() -> None:
    torch.manual_seed(0)
    model = small("googlenet", 3, 32, aux_logits=True)
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([1, 2])
    out = model.train()(x)
    assert isinstance(out, AuxOutput)
    assert out.logits.shape == (2, NUM_CLASSES) and out.aux_weight == 0.3
    assert len(out.aux) == 2 and all(a.shape == (2, NUM_CLASSES) for a in out.aux)
    objective = F.cross_entropy(out.logits, y) + out.aux_weight * sum(F.cross_entropy(a, y) for a in out.aux)
    objective.backward()
    assert model.aux1.fc2.weight.grad is not None and model.aux2.fc2.weight.grad is not None
    logits = model.eval()(x)
    assert isinstance(logits, torch.Tensor) and logits.shape == (2, NUM_CLASSES)
    # The model-info tools run in eval mode and so see plain logits.
    assert flops_per_image(model, (3, 32, 32)) > 0
    assert layer_table(model, (3, 32, 32))


def test_googlenet_aux_at_minimal_depth() -> None:
    model = small("googlenet", 1, 28, aux_logits=True).train()
    with torch.no_grad():
        out = build_model(
            "googlenet", in_channels=1, num_classes=3, image_size=28, width=0.125, depth=0.2, args={"aux_logits": True}
        ).train()(torch.randn(2, 1, 28, 28))
    assert isinstance(out, AuxOutput) and len(out.aux) == 2
    assert model.aux_after == ("inception4a", "inception4d")
