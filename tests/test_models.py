"""Models: the seed tutorials' parameter counts, every arch and init runs, summary is right."""
import pytest
import torch
from torch import nn

from dlcore.config import ConfigError, INITS, default_config, resolve_config
from dlcore.models import MODELS, build_model, init_weights, list_models, summarize

MNIST, CIFAR, DIGITS = (1, 28, 28), (3, 32, 32), (1, 8, 8)
# built from scratch by the config alone; `pretrained` needs weights (tests/test_pretrained.py)
SCRATCH = [a for a in MODELS if a != "pretrained"]


def model_of(model_cfg, shape=MNIST, classes=10):
    return build_model(resolve_config({"model": model_cfg})["model"], shape, classes)


def n_params(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_seed_dnn_has_569226_parameters():
    assert n_params(model_of({})) == 569_226


def test_seed_cnn_has_9457962_parameters():
    cnn = {"arch": "cnn", "blocks": [[16, 32], [64, 128], [128, 256]], "fc_dims": [2048, 256],
           "batchnorm": False}
    assert n_params(model_of(cnn, CIFAR)) == 9_457_962


def test_registry_lists_five_architectures_and_refuses_others():
    assert list_models() == ["dnn", "cnn", "resnet", "rnn", "pretrained"]
    with pytest.raises(ConfigError, match="allowed: dnn, cnn, resnet, rnn, pretrained"):
        build_model({"arch": "vit"}, MNIST, 10)


@pytest.mark.parametrize("arch", SCRATCH)
@pytest.mark.parametrize("shape", [MNIST, CIFAR, DIGITS], ids=["mnist", "cifar", "digits"])
def test_every_arch_runs_forward_and_backward_without_nan(arch, shape):
    cfg = default_config(arch)["model"]
    if arch == "cnn" and shape == DIGITS:
        cfg["blocks"] = [[8, 8]]
    model = build_model(cfg, shape, 10)
    x = torch.randn(4, *shape)
    out = model(x)
    assert out.shape == (4, 10)
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def weights_and_biases(model):
    """Every linear, convolution and recurrent weight and bias: what `init` must set."""
    weights, biases = [], []
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            weights.append(m.weight)
            biases += [m.bias] if m.bias is not None else []
        elif isinstance(m, nn.RNNBase):
            for n, p in m.named_parameters():
                (weights if n.startswith("weight") else biases).append(p)
    return weights, biases


def expected_std(w, init):
    """xavier_normal: sqrt(2 / (fan_in + fan_out)); kaiming_normal (fan_in, relu): sqrt(2 / fan_in)."""
    field = w[0][0].numel()                    # kernel size of a convolution, 1 for a matrix
    fan_in, fan_out = w.shape[1] * field, w.shape[0] * field
    return (2.0 / (fan_in + fan_out)) ** 0.5 if init == "xavier" else (2.0 / fan_in) ** 0.5


@pytest.mark.parametrize("arch", SCRATCH)
@pytest.mark.parametrize("init", INITS)
def test_every_init_applies_to_every_arch(arch, init):
    torch.manual_seed(0)
    model = build_model(dict(default_config(arch)["model"], init=init), MNIST, 10)
    weights, biases = weights_and_biases(model)
    assert weights and biases
    if init == "zeros":
        assert all((w == 0).all() for w in weights)
    elif init == "gaussian":
        big = max(weights, key=lambda w: w.numel())
        assert abs(big.std().item() - 1.0) < 0.05
    elif init in ("xavier", "kaiming"):
        pooled = []
        for w in weights:
            n, want = w.numel(), expected_std(w, init)
            # the sample std of n normal draws is off by about 1/sqrt(2n) of itself: allow 5 times that
            assert abs(w.std().item() / want - 1) < 5 / (2 * n) ** 0.5, (tuple(w.shape), want)
            assert abs(w.mean().item()) < 5 * want / n ** 0.5
            pooled.append((w / want).flatten())
        pooled = torch.cat(pooled)            # all weights in units of their own expected std
        assert abs(pooled.std().item() - 1) < 5 / (2 * pooled.numel()) ** 0.5
    if init != "default":
        assert all((b == 0).all() for b in biases)    # exactly zero
    assert torch.isfinite(model(torch.randn(2, *MNIST))).all()


def test_init_reaches_recurrent_weights():
    model = model_of({"arch": "rnn", "cell": "lstm", "init": "zeros"})
    assert all((p == 0).all() for p in model.rnn.parameters())


@pytest.mark.parametrize("init, want", [("kaiming", (2.0 / 2000) ** 0.5),
                                        ("xavier", (2.0 / 3000) ** 0.5)])
def test_init_std_of_a_large_layer(init, want):
    torch.manual_seed(0)
    lin = nn.Linear(2000, 1000)                # fan_in 2000, fan_out 1000
    init_weights(lin, init)
    assert abs(lin.weight.std().item() - want) / want < 0.005     # 2M weights: 1/sqrt(2n) = 0.0005
    # normal, not uniform with the same std: 68.3% of a normal lies within one std (57.7% uniform)
    assert (lin.weight.abs() < want).float().mean().item() == pytest.approx(0.6827, abs=0.005)
    assert torch.equal(lin.bias, torch.zeros(1000))


def conv_layer_std(init):
    torch.manual_seed(1)
    conv = nn.Conv2d(64, 32, 3)                # fan_in 64*9 = 576, fan_out 32*9 = 288
    init_weights(conv, init)
    return conv.weight.std().item()


def test_conv_fans_include_the_kernel_size():
    assert conv_layer_std("kaiming") == pytest.approx((2 / 576) ** 0.5, rel=0.03)
    assert conv_layer_std("xavier") == pytest.approx((2 / (576 + 288)) ** 0.5, rel=0.03)


def test_summary_rows_add_up_and_end_in_the_output_shape():
    model = model_of({"arch": "cnn", "blocks": [[8, 16]], "fc_dims": [32]})
    s = summarize(model, MNIST)
    assert sum(r["params"] for r in s["rows"]) == s["trainable"] == n_params(model)
    assert s["rows"][-1]["output_shape"] == [-1, 10]
    pool = next(r for r in s["rows"] if r["type"] == "MaxPool2d")
    assert pool["output_shape"] == [-1, 16, 14, 14]


def test_rnn_reads_rows_as_a_sequence():
    model = model_of({"arch": "rnn", "cell": "gru", "hidden_size": 24, "bidirectional": True}, CIFAR)
    rows = summarize(model, CIFAR)["rows"]
    gru = next(r for r in rows if r["type"] == "GRU")
    assert gru["output_shape"] == [-1, 32, 48]      # 32 rows, 2 x 24 features


def test_cnn_too_deep_for_the_image_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"model.blocks: 4 blocks .* at most 3 blocks"):
        model_of({"arch": "cnn", "blocks": [[8, 8]] * 4}, DIGITS)


def test_resnet_downsamples_per_stage():
    model = model_of({"arch": "resnet", "stage_blocks": [1, 1, 1], "base_width": 8}, CIFAR)
    rows = summarize(model, CIFAR)["rows"]
    last_conv = [r for r in rows if r["type"] == "Conv2d"][-1]
    assert last_conv["output_shape"][1:] == [32, 8, 8]


def test_oversized_model_is_refused_before_it_is_built():
    with pytest.raises(ConfigError, match="too large; at most 200,000,000"):
        model_of({"hidden_dims": [65536] * 16})
