import torch
from scimilarity.nn_models import Encoder

from scdd.models.dropout import UniformDropout, with_uniform_dropout
from scdd.models.foundation import build_autoencoder


def test_the_mask_keeps_one_minus_p_of_the_values_scaled_by_its_inverse():
    torch.manual_seed(0)
    layer = UniformDropout(0.4).train()
    out = layer(torch.ones(400, 1000))
    kept = out != 0
    assert abs(kept.float().mean().item() - 0.6) < 0.005
    # p is met to 1 / 32768, so the scale to 3e-5
    assert torch.allclose(out[kept], torch.full_like(out[kept], 1 / 0.6), rtol=3e-5)
    assert (layer(torch.ones(400, 1000)) != out).any()  # a fresh mask per call


def test_odd_sizes_and_half_precision_get_a_mask_of_their_own_shape():
    torch.manual_seed(0)
    x = torch.ones(7, 13, 3, dtype=torch.bfloat16)
    out = UniformDropout(0.5).train()(x)
    assert out.shape == x.shape and out.dtype == torch.bfloat16
    assert set(out.unique().tolist()) == {0.0, 2.0}


def test_the_gradient_flows_through_the_kept_values_only():
    x = torch.ones(50, 80, requires_grad=True)
    out = UniformDropout(0.5).train()(x)
    out.sum().backward()
    assert torch.equal(x.grad, out.detach())  # 2 where kept, 0 where dropped


def test_eval_mode_and_rate_zero_pass_the_input_through():
    x = torch.randn(20, 30)
    assert torch.equal(UniformDropout(0.5).eval()(x), x)
    assert torch.equal(UniformDropout(0.0).train()(x), x)


def test_the_autoencoder_has_uniform_dropout_and_scimilaritys_weights():
    encoder, decoder = build_autoencoder(300)
    drops = [
        m
        for m in (*encoder.modules(), *decoder.modules())
        if isinstance(m, torch.nn.Dropout)
    ]
    assert drops and all(type(m) is UniformDropout for m in drops)
    reference = Encoder(300, latent_dim=encoder.latent_dim)
    assert encoder.state_dict().keys() == reference.state_dict().keys()


def test_swapping_keeps_each_rate():
    net = torch.nn.Sequential(
        torch.nn.Dropout(0.3),
        torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Dropout(0.7)),
    )
    with_uniform_dropout(net)
    assert [type(m) for m in (net[0], net[1][1])] == [UniformDropout] * 2
    assert (net[0].p, net[1][1].p) == (0.3, 0.7)
