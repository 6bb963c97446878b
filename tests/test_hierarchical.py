"""The hierarchical (ladder) VAE: its bound and importance weights against a plain second
implementation, its log p(x) against numerical integration, and the model through the
Trainer and the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch.distributions import Bernoulli, Normal, kl_divergence

import vaekit
from conftest import TINY_FLAGS, assert_clean_error, run_cli
from vaekit import losses
from vaekit.config import ModelConfig
from vaekit.errors import ConfigError
from vaekit.evaluation.likelihood import _example_noise, importance_sampling
from vaekit.io import card
from vaekit.models import LadderVAE
from vaekit.models.conv import ConvDecoder, ConvEncoder
from vaekit.models.described import model_section
from vaekit.models.mlp import MLPDecoder, MLPEncoder

SHAPE = (1, 2, 2)  # four binary pixels


def tiny_ladder(dims: tuple[int, ...], seed: int = 0, classes: int = 0) -> LadderVAE:
    """A ladder on four Bernoulli pixels, every weight random (the prior nets too, which
    start at zero), so that each layer's prior depends on the layer above; `classes`: a
    class-conditional one, its label embedding of 2 values."""
    torch.manual_seed(seed)
    label = 2 if classes else 0
    model = LadderVAE(
        MLPEncoder(SHAPE, [6], "tanh", label),
        MLPDecoder(SHAPE, [6], "tanh", dims[0] + label),
        latent_dims=dims,
        ladder_hidden=5,
        input_shape=SHAPE,
        num_classes=classes,
        label_dim=2,
    )
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.7)
    return model.eval()


BINARY = torch.tensor([[0, 1, 1, 0], [1, 1, 0, 0], [0, 0, 0, 1]], dtype=torch.float32)
X = BINARY.view(3, *SHAPE)


def plain_log_weight(
    model: LadderVAE, x: torch.Tensor, eps: torch.Tensor, y: int | None = None
) -> torch.Tensor:
    """log p(x, z) - log q(z|x) for one example x (C, H, W) and one eps (D,), written as a
    loop over the layers with torch.distributions, from sigma^2 (no log-space algebra); a
    conditional model's label y embedded and handed to the encoder and, beside z_1, the
    decoder."""
    dims = list(model.latent_dims)
    noise = eps.split(dims)
    embedded = None if y is None else model.label_embedding.weight[y].unsqueeze(0)  # (1, E)
    h = model.encoder(x.unsqueeze(0), *([] if embedded is None else [embedded]))[0]
    hats = []
    for i, head in enumerate(model.q_heads):
        if i > 0:
            h = model.up[i - 1](h)
        mu, logvar = head(h).chunk(2)
        hats.append((mu, logvar.exp()))
    log_p = log_q = torch.zeros(())
    z_above = None
    z = {}
    for i in reversed(range(len(dims))):
        if z_above is None:
            p = Normal(torch.zeros(dims[i]), torch.ones(dims[i]))
            q = Normal(hats[i][0], hats[i][1].sqrt())
        else:
            mu_p, logvar_p = model.p_nets[i](z_above).chunk(2)
            var_p, (mu_hat, var_hat) = logvar_p.exp(), hats[i]
            var_q = 1.0 / (1.0 / var_hat + 1.0 / var_p)
            mu_q = (mu_hat / var_hat + mu_p / var_p) * var_q
            p, q = Normal(mu_p, var_p.sqrt()), Normal(mu_q, var_q.sqrt())
        z[i] = q.mean + q.stddev * noise[i]
        log_p = log_p + p.log_prob(z[i]).sum()
        log_q = log_q + q.log_prob(z[i]).sum()
        z_above = z[i]
    z1 = z[0].unsqueeze(0)
    logits = model.decoder(z1 if embedded is None else torch.cat([z1, embedded], 1))[0]
    log_px_z = Bernoulli(logits=logits).log_prob(x).sum()
    return log_px_z + log_p - log_q


@pytest.mark.parametrize("classes", [0, 3])
def test_importance_weights_match_a_plain_loop_over_layers(classes: int) -> None:
    model = tiny_ladder((2, 3, 1), classes=classes)
    k = 4
    eps = torch.randn(k, X.shape[0], model.latent_dim, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([2, 0, 1]) if classes else None
    with torch.no_grad():
        log_w = model.log_importance_weights(X, k, y, eps=eps)
        plain = torch.stack(
            [
                torch.stack(
                    [
                        plain_log_weight(model, X[b], eps[j, b], None if y is None else int(y[b]))
                        for b in range(X.shape[0])
                    ]
                )
                for j in range(k)
            ]
        )
    assert log_w.shape == (k, 3)
    torch.testing.assert_close(log_w, plain, rtol=1e-5, atol=1e-4)
    if classes:  # the label reaches the bound: other labels, other weights
        with torch.no_grad():
            other = model.log_importance_weights(X, k, (y + 1) % classes, eps=eps)
        assert not torch.allclose(other, log_w)


def test_a_conditional_ladder_through_the_cli(tmp_path: Path) -> None:
    run = tmp_path / "run"
    flags = ["--model.posterior", "ladder", "--model.latent_dims", "4,2", "--model.conditional"]
    r = run_cli("train", "--data", "noise", *TINY_FLAGS, *flags, "--out", str(run))
    assert r.returncode == 0, r.stderr
    loaded = vaekit.load(run)
    assert isinstance(loaded, LadderVAE) and loaded.conditional
    r = run_cli("evaluate", str(run), "--iw-samples", "4", "--json")
    assert r.returncode == 0, r.stderr
    stats = json.loads(r.stdout)
    assert stats["log_px"] >= stats["iw_elbo"] and stats["kl_1"] > 0
    r = run_cli("sample", str(run), "--label", "3", "--out", str(tmp_path / "s.png"))
    assert r.returncode == 0 and (tmp_path / "s.png").exists(), r.stderr
    z = loaded.sample_prior(2, torch.Generator().manual_seed(0))
    two = [loaded.decode_images(z, torch.tensor([c, c])) for c in (0, 5)]
    assert not torch.equal(*two)  # the decoder reads the label


def test_layer_kls_are_closed_form_per_layer_and_sum_to_the_kl() -> None:
    model = tiny_ladder((2, 3, 1))
    eps = torch.randn(3, model.latent_dim, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        out = model(X, eps=eps)
        terms, kl_per_dim = model.elbo_terms(X, out=out)
    layers = model.layer_kls(kl_per_dim)
    assert layers.shape == (3, 3)
    torch.testing.assert_close(layers.sum(1), terms.kl)
    # each layer's KL by torch.distributions, the prior's moments given the sampled z above
    z = out.z.split([2, 3, 1], dim=1)
    moments = zip(out.mu.split([2, 3, 1], 1), out.logvar.split([2, 3, 1], 1), strict=True)
    q = [Normal(m, (0.5 * v).exp()) for m, v in moments]
    priors = [*(model.p_nets[i](z[i + 1]).chunk(2, dim=1) for i in range(2))]
    p = [Normal(m, (0.5 * v).exp()) for m, v in priors] + [Normal(0.0, torch.ones(3, 1))]
    for i in range(3):
        torch.testing.assert_close(
            layers[:, i], kl_divergence(q[i], p[i]).sum(1), rtol=1e-4, atol=1e-5
        )
    # the ELBO's single-path estimate: recon + KL = -(log p(x|z) + ... ) in expectation
    many = model.log_importance_weights(X, 20000, generator=torch.Generator().manual_seed(3))
    elbo_mc = many.mean(0)
    n = 4000
    g = torch.Generator().manual_seed(4)
    nelbo = torch.stack([model.elbo_terms(X, generator=g)[0].nelbo for _ in range(n)]).mean(0)
    stderr = many.std(0) / math.sqrt(many.shape[0])
    assert torch.all((elbo_mc + nelbo.detach()).abs() < 5 * stderr + 0.02)


def log_px_by_integration(model: LadderVAE, x: torch.Tensor, half: float = 8.0) -> torch.Tensor:
    """log p(x) = log of the integral over z_1, z_2 of p(x|z_1) p(z_1|z_2) p(z_2), for a
    ladder of two 1-D layers, by the trapezoid rule on a fine grid."""
    grid = torch.linspace(-half, half, 801, dtype=torch.float64)
    step = float(grid[1] - grid[0])
    z1, z2 = torch.meshgrid(grid, grid, indexing="ij")  # (G, G)
    with torch.no_grad():
        mu_p, logvar_p = model.p_nets[0](z2.reshape(-1, 1).float()).double().chunk(2, dim=1)
        log_p_z1 = Normal(mu_p[:, 0], (0.5 * logvar_p[:, 0]).exp()).log_prob(z1.reshape(-1))
        log_p_z2 = Normal(0.0, 1.0).log_prob(z2.reshape(-1))
        logits = model.decoder(z1.reshape(-1, 1).float()).double().flatten(1)  # (G*G, 4)
    result = []
    for xb in x.flatten(1).double():
        log_joint = Bernoulli(logits=logits).log_prob(xb).sum(1) + log_p_z1 + log_p_z2
        trapezoid = torch.ones(grid.shape[0], dtype=torch.float64)
        trapezoid[0] = trapezoid[-1] = 0.5
        weights = (trapezoid[:, None] * trapezoid[None, :]).reshape(-1).log()
        result.append(torch.logsumexp(log_joint + weights, 0) + 2 * math.log(step))
    return torch.stack(result)


def test_iw_bound_rises_to_log_px_by_integration() -> None:
    model = tiny_ladder((1, 1), seed=5)
    exact = log_px_by_integration(model, X)
    k = 100_000
    with torch.no_grad():
        log_w = model.log_importance_weights(X, k, generator=torch.Generator().manual_seed(6))
    elbo = log_w.mean(0)
    # IW(K) averaged over disjoint groups of K: rises with K, stays below log p(x)
    group = {g: torch.logsumexp(log_w.view(-1, g, 3), 1).mean(0) - math.log(g)
             for g in (10, 100, 1000)}  # fmt: skip
    assert torch.all(elbo < group[10]) and torch.all(group[10] < group[100])
    assert torch.all(group[100] < group[1000]) and torch.all(group[1000] < exact + 0.01)
    assert torch.all(elbo < exact - 0.05)  # a gap the test can see
    # all K: log p(x) within its Monte Carlo error (delta method: the relative standard
    # error of the mean weight, sqrt(K / ESS - 1) / sqrt(K))
    w = torch.softmax(log_w.double(), 0)
    ess = 1.0 / w.pow(2).sum(0)
    error = (k / ess - 1.0).sqrt() / math.sqrt(k)
    assert torch.all(error < 0.03)
    assert torch.all((losses.iw_bound(log_w).double() - exact).abs() < 4 * error + 0.002)


def test_evaluate_estimates_log_px_by_the_ladders_own_weights() -> None:
    model = tiny_ladder((2, 1))
    k, seed = 16, 3
    iw = importance_sampling(model, X, k, seed=seed, budget=40)  # chunks of K too
    eps = torch.stack([_example_noise(i, k, 3, seed, torch.device("cpu")) for i in range(3)], 1)
    with torch.no_grad():
        log_w = model.log_importance_weights(X, k, eps=eps)  # (K, B)
    torch.testing.assert_close(iw.log_px, losses.iw_bound(log_w).double(), rtol=0, atol=1e-5)
    torch.testing.assert_close(iw.elbo, log_w.mean(0).double(), rtol=0, atol=1e-5)


def test_sample_draws_top_down_from_the_prior() -> None:
    model = tiny_ladder((2, 1))
    got = model.sample(5, generator=torch.Generator().manual_seed(7))
    eps = torch.randn(5, 3, generator=torch.Generator().manual_seed(7))
    z2 = eps[:, 2:]
    mu, logvar = model.p_nets[0](z2).chunk(2, dim=1)
    z1 = mu + (0.5 * logvar).exp() * eps[:, :2]
    want = torch.sigmoid(model.decoder(z1))
    torch.testing.assert_close(got, want.detach())


def test_ladder_trains_with_per_layer_kl_records_saves_and_loads(tiny) -> None:
    options = {"model.posterior": "ladder", "model.latent_dims": [4, 2], "train.epochs": 2}
    result = vaekit.Trainer(None, tiny("ladder", **options)).fit()
    model, record = result.model, result.history[-1]
    assert isinstance(model, LadderVAE) and model.latent_dims == [4, 2]
    assert model.latent_dim == 6
    assert record["val_kl_1"] + record["val_kl_2"] == pytest.approx(record["val_kl"], rel=1e-9)
    train = record["train_kl_1"] + record["train_kl_2"]  # means of each step's layer KLs
    assert train == pytest.approx(record["train_kl"], rel=1e-5)
    loaded = vaekit.load(result.run_dir)
    assert isinstance(loaded, LadderVAE) and loaded.architecture() == model.architecture()
    described, _ = model_section(loaded, ModelConfig())  # what config.yaml reports
    assert (described.posterior, described.latent_dims) == ("ladder", [4, 2])
    text = card.model_card("alice/ladder", architecture=loaded.architecture(), parameters=1)
    assert "in 2 top-down layers of 4, 2 values" in text  # the Hub's card
    x = torch.rand(6, 1, 28, 28)
    assert torch.equal(loaded.reconstruct(x), model.eval().reconstruct(x))
    stats = vaekit.evaluate(loaded, x, iw_samples=8)
    assert stats["kl_1"] + stats["kl_2"] == pytest.approx(stats["kl"], rel=1e-6)
    assert len(stats["kl_per_dim"]) == 6
    assert sum(stats["kl_per_dim"]) == pytest.approx(stats["kl"], rel=1e-5)
    # resumed in two parts: the same weights as one run of two epochs
    cfg = tiny("parts", **options)
    cfg.train.epochs = 1
    vaekit.train(cfg)
    cfg.train.epochs = 2
    parts = vaekit.Trainer(None, cfg, resume=True).fit().model.state_dict()
    whole = model.state_dict()
    assert all(torch.equal(whole[k], parts[k]) for k in whole)


def test_conv_ladder_trains(tiny) -> None:
    conv = {"model.arch": "conv", "model.channels": [4, 8], "model.blocks_per_level": 0}
    result = vaekit.Trainer(
        None, tiny("conv", **conv, **{"model.posterior": "ladder", "model.latent_dims": [3, 2]})
    ).fit()
    assert isinstance(result.model, LadderVAE)
    assert math.isfinite(result.history[-1]["val_nelbo"])


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"model.posterior": "ladder"}, "needs model.latent_dims: 2 to 16 layer sizes"),
        ({"model.posterior": "ladder", "model.latent_dims": [8]}, "2 to 16 layer sizes"),
        ({"model.latent_dims": [8, 4]}, "model.latent_dims sizes the layers of model.posterior"),
        (
            {"model.posterior": "vq", "model.latent_dims": [8, 4]},
            "drop model.latent_dims (posterior vq)",
        ),
    ],
)
def test_options_a_ladder_cannot_take_are_refused(tiny, options, needle) -> None:
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        vaekit.Trainer(None, tiny("bad", **options)).fit()


def test_ladder_through_the_cli(tmp_path: Path) -> None:
    run = tmp_path / "run"
    flags = ["--model.posterior", "ladder", "--model.latent_dims", "4,2"]
    r = run_cli("train", "--data", "noise", *TINY_FLAGS, *flags, "--out", str(run))
    assert r.returncode == 0, r.stderr
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"val_kl_1", "val_kl_2"} <= set(record)
    r = run_cli("evaluate", str(run), "--iw-samples", "5", "--json")
    assert r.returncode == 0, r.stderr
    stats = json.loads(r.stdout)
    assert {"log_px", "kl_1", "kl_2"} <= set(stats) and stats["log_px"] >= stats["iw_elbo"]
    r = run_cli("evaluate", str(run), "--iw-samples", "5")
    assert "per layer:       z_1" in r.stdout, r.stdout
    r = run_cli("sample", str(run), "--out", str(tmp_path / "s.png"))
    assert r.returncode == 0 and (tmp_path / "s.png").exists(), r.stderr
    r = run_cli("report", str(run), "--max-test", "16")
    assert r.returncode == 0, r.stderr
    assert "val kl 2" in (run / "report.html").read_text()
    assert "train kl 2" in (run / "report.html").read_text()
    r = run_cli("train", "--data", "noise", *TINY_FLAGS, *flags, "--out", str(run), "--resume",
                "--epochs", "2")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
    assert_clean_error(
        run_cli(
            "train",
            "--data",
            "noise",
            *TINY_FLAGS,
            "--model.posterior",
            "ladder",
            "--out",
            str(tmp_path / "bad"),
        ),  # fmt: skip
        "model.latent_dims",
    )


# -- layers of maps (model.arch conv, model.latent_channels > 0) -----------------------------
MAP_INPUT = (1, 4, 4)  # 16 binary pixels; one conv level: the latent's maps are 2x2


def tiny_map_ladder(dims: tuple[int, ...], seed: int = 0) -> LadderVAE:
    """A ladder of maps of `dims` channels at 2x2 on 4x4 Bernoulli pixels, every weight
    random (the prior nets too, which start at zero)."""
    torch.manual_seed(seed)
    model = LadderVAE(
        ConvEncoder(MAP_INPUT, [3], 0),
        ConvDecoder(MAP_INPUT, [3], 0, latent_channels=dims[0]),
        latent_dims=dims,
        ladder_hidden=4,
        input_shape=MAP_INPUT,
        latent_shape=(sum(dims), 2, 2),
    )
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.4)  # logvars inside the clamp
    return model.eval()


X_MAP = (torch.rand(3, *MAP_INPUT, generator=torch.Generator().manual_seed(0)) > 0.5).float()


def plain_map_path(model: LadderVAE, x: torch.Tensor, eps: torch.Tensor) -> dict[str, torch.Tensor]:
    """One example x (C, H, W), one eps (D,) split into the layers' maps (c_i, 2, 2), z_1's
    first: the loop over the layers on maps, with torch.distributions from sigma^2. Returns
    log p(x|z_1), log p(z), log q(z|x) and each layer's KL(q || p) given the layer above."""
    dims = list(model.latent_dims)
    noise = [n.view(c, 2, 2) for n, c in zip(eps.split([c * 4 for c in dims]), dims, strict=True)]
    h = model.encoder.feature_map(x.unsqueeze(0))  # (1, F, 2, 2)
    hats = []
    for i, head in enumerate(model.q_heads):
        if i > 0:
            h = model.up[i - 1](h)
        mu, logvar = head(h)[0].chunk(2)  # each (c_i, 2, 2)
        hats.append((mu, logvar.exp()))
    log_p = log_q = torch.zeros(())
    kls: list[torch.Tensor] = [torch.zeros(())] * len(dims)
    z_above = None
    for i in reversed(range(len(dims))):
        if z_above is None:
            p = Normal(torch.zeros(dims[i], 2, 2), torch.ones(dims[i], 2, 2))
            q = Normal(hats[i][0], hats[i][1].sqrt())
        else:
            mu_p, logvar_p = model.p_nets[i](z_above.unsqueeze(0))[0].chunk(2)
            var_p, (mu_hat, var_hat) = logvar_p.exp(), hats[i]
            var_q = 1.0 / (1.0 / var_hat + 1.0 / var_p)
            mu_q = (mu_hat / var_hat + mu_p / var_p) * var_q
            p, q = Normal(mu_p, var_p.sqrt()), Normal(mu_q, var_q.sqrt())
        z = q.mean + q.stddev * noise[i]
        log_p = log_p + p.log_prob(z).sum()
        log_q = log_q + q.log_prob(z).sum()
        kls[i] = kl_divergence(q, p).sum()
        z_above = z
    logits = model.decoder(z_above.unsqueeze(0))[0]  # z_1's map
    log_px_z = Bernoulli(logits=logits).log_prob(x).sum()
    return {"log_px_z": log_px_z, "log_p": log_p, "log_q": log_q, "kls": torch.stack(kls)}


def test_ladder_of_maps_weights_match_a_plain_loop_over_layers() -> None:
    model = tiny_map_ladder((2, 1, 3))
    assert model.latent_shape == (6, 2, 2) and model.latent_dim == 24
    k = 4
    eps = torch.randn(k, 3, model.latent_dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        log_w = model.log_importance_weights(X_MAP, k, eps=eps)
        plain = torch.stack(
            [
                torch.stack(
                    [
                        (lambda r: r["log_px_z"] + r["log_p"] - r["log_q"])(
                            plain_map_path(model, X_MAP[b], eps[j, b])
                        )
                        for b in range(3)
                    ]
                )
                for j in range(k)
            ]
        )
    assert log_w.shape == (k, 3)
    torch.testing.assert_close(log_w, plain, rtol=1e-5, atol=1e-4)


def test_ladder_of_maps_bound_and_layer_kls_match_a_plain_loop() -> None:
    """The single-path bound: -log p(x|z_1) and each layer's closed-form KL (summed over
    its map) equal the plain loop's at the same noise, and the layers' KLs sum to the KL."""
    model = tiny_map_ladder((2, 1, 3), seed=1)
    eps = torch.randn(3, model.latent_dim, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        terms, kl_per_dim = model.elbo_terms(X_MAP, out=model(X_MAP, eps=eps))
        plain = [plain_map_path(model, X_MAP[b], eps[b]) for b in range(3)]
    layers = model.layer_kls(kl_per_dim)
    assert layers.shape == (3, 3) and kl_per_dim.shape == (3, 24)
    torch.testing.assert_close(layers, torch.stack([r["kls"] for r in plain]), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(layers.sum(1), terms.kl)
    nelbo = torch.stack([r["kls"].sum() - r["log_px_z"] for r in plain])
    torch.testing.assert_close(terms.nelbo, nelbo, rtol=1e-5, atol=1e-4)
    # sample: top-down from the prior, the decoder reading z_1's map
    got = model.sample(2, generator=torch.Generator().manual_seed(7))
    eps = torch.randn(2, 24, generator=torch.Generator().manual_seed(7))
    n1, n2, z3 = eps[:, :8].view(2, 2, 2, 2), eps[:, 8:12].view(2, 1, 2, 2), eps[:, 12:]
    mu, logvar = model.p_nets[1](z3.view(2, 3, 2, 2)).chunk(2, dim=1)
    z2 = mu + (0.5 * logvar).exp() * n2
    mu, logvar = model.p_nets[0](z2).chunk(2, dim=1)
    z1_noise = n1
    want = torch.sigmoid(model.decoder(mu + (0.5 * logvar).exp() * z1_noise))
    torch.testing.assert_close(got, want.detach())


def test_a_ladder_of_maps_through_the_cli(tmp_path: Path) -> None:
    run = tmp_path / "run"
    flags = ["--model.posterior", "ladder", "--model.latent_dims", "2,1", "--model.arch",
             "conv", "--model.channels", "4,8", "--model.blocks_per_level", "0",
             "--model.latent_channels", "1"]  # fmt: skip
    r = run_cli("train", "--data", "noise", *TINY_FLAGS, *flags, "--out", str(run))
    assert r.returncode == 0, r.stderr
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["val_kl_1"] + record["val_kl_2"] == pytest.approx(record["val_kl"], rel=1e-6)
    saved = json.loads((run / "config.json").read_text())["architecture"]
    assert saved["latent_shape"] == [3, 7, 7] and saved["latent_dims"] == [2, 1]
    loaded = vaekit.load(run)
    assert isinstance(loaded, LadderVAE) and loaded.latent_shape == (3, 7, 7)
    assert loaded.layer_sizes == [98, 49] and loaded.latent_dim == 147
    x = torch.rand(4, 1, 28, 28)
    mu, _ = loaded.encode(x)
    assert mu.shape == (4, 3, 7, 7)  # the layers' maps stacked along the channels
    assert torch.equal(loaded.decode_images(mu), loaded.reconstruct(x))
    r = run_cli("evaluate", str(run), "--iw-samples", "4", "--json")
    assert r.returncode == 0, r.stderr
    stats = json.loads(r.stdout)
    assert stats["log_px"] >= stats["iw_elbo"] and len(stats["kl_per_dim"]) == 147
    assert stats["kl_1"] + stats["kl_2"] == pytest.approx(stats["kl"], rel=1e-6)
    r = run_cli("sample", str(run), "--out", str(tmp_path / "s.png"))
    assert r.returncode == 0 and (tmp_path / "s.png").exists(), r.stderr
    r = run_cli("report", str(run), "--max-test", "16")
    assert r.returncode == 0 and "val kl 2" in (run / "report.html").read_text(), r.stderr
    text = card.model_card("alice/maps", architecture=loaded.architecture(), parameters=1)
    assert "in 2 top-down layers of 2, 1 channels" in text


def test_labels_with_a_ladder_of_maps_are_refused_as_the_gaussian_vaes(tmp_path: Path) -> None:
    """The Gaussian VAE refuses labels with a spatial latent; a ladder of maps, the same."""
    maps = ["--model.arch", "conv", "--model.channels", "4,8", "--model.latent_channels", "1",
            "--model.conditional"]  # fmt: skip
    ladder = ["--model.posterior", "ladder", "--model.latent_dims", "2,1"]
    lines = []
    for name, extra in (("gauss", []), ("ladder", ladder)):
        r = run_cli("train", "--data", "noise", *TINY_FLAGS, *maps, *extra,
                    "--out", str(tmp_path / name))  # fmt: skip
        assert_clean_error(r, "model.conditional needs a latent vector")
        lines.append(r.stderr.strip())
    assert lines[0] == lines[1]


def test_a_ladder_of_maps_needs_the_conv_encoders_map_and_a_fitting_shape() -> None:
    def build(encoder: torch.nn.Module, shape: tuple[int, int, int]) -> LadderVAE:
        decoder = ConvDecoder(MAP_INPUT, [3], 0, latent_channels=2)
        return LadderVAE(encoder, decoder, latent_dims=[2, 1], input_shape=MAP_INPUT,
                         latent_shape=shape)  # fmt: skip

    with pytest.raises(ConfigError, match="reads the conv encoder's last level"):
        build(MLPEncoder(MAP_INPUT, [6], "tanh", 0), (3, 2, 2))
    with pytest.raises(ConfigError, match=r"their channels stacked, C = 3; got \(4, 2, 2\)"):
        build(ConvEncoder(MAP_INPUT, [3], 0), (4, 2, 2))
    with pytest.raises(ConfigError, match=r"not at the latent's size \(3, 3\)"):
        build(ConvEncoder(MAP_INPUT, [3], 0), (3, 3, 3))
