"""The VampPrior and the IAF posterior, each bound against an independent computation
(a loop over the prior's components, torch.distributions, autograd's Jacobian, a plain
importance-sampling loop), and the composed models through every path a user takes
(train, save, load, evaluate --iw-samples, sample, report) and every refusal."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.autograd.functional import jacobian
from torch.distributions import Bernoulli, Categorical, Independent, MixtureSameFamily, Normal

import vaekit
from conftest import TINY_FLAGS, assert_one_line_error
from vaekit import cli
from vaekit.config import ModelConfig
from vaekit.errors import ConfigError, DataError
from vaekit.evaluation.likelihood import _example_noise, elbo_stats, importance_sampling
from vaekit.models import IAFVAE, VAE, ComposedVAE
from vaekit.models.flows import IAF, IAFStep, SpatialIAF
from vaekit.models.priors import log_mixture

SHAPE = (1, 6, 6)


CONV_SHAPE = (1, 8, 8)
# the models the checks run on: an MLP's latent vector, a conv model's vector and its spatial
# latent (2 channels of 2x2), a class-conditional MLP (3 classes)
KINDS = {
    "mlp": ({}, SHAPE, 0),
    "conv": ({"arch": "conv", "channels": [4, 8], "blocks_per_level": 0}, CONV_SHAPE, 0),
    "conv-spatial": (
        {"arch": "conv", "channels": [4, 8], "blocks_per_level": 0, "latent_channels": 2},
        CONV_SHAPE,
        0,
    ),
    "conditional": ({"conditional": True, "label_dim": 2}, SHAPE, 3),
}


def model(
    posterior: str = "gaussian", prior: str = "vamp", kind: str = "mlp", **options: object
) -> VAE:
    extra, shape, classes = KINDS[kind]
    cfg = ModelConfig(hidden=[16], latent_dim=3, posterior=posterior, prior=prior,
                      pseudo_inputs=5, flow_steps=2, **extra, **options)  # type: ignore[arg-type]  # fmt: skip
    m = VAE.from_config(cfg, shape, classes)
    with torch.no_grad():  # spread the posteriors and the flow so the checks see them work
        for p in m.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return m.eval()


def images(n: int, seed: int = 1) -> torch.Tensor:
    return torch.rand((n, *SHAPE), generator=torch.Generator().manual_seed(seed))


# -- the VampPrior --------------------------------------------------------------------------------
def test_vamp_log_density_is_a_loop_over_components_with_logsumexp() -> None:
    m = model()
    assert isinstance(m, ComposedVAE) and m.vamp is not None
    z = torch.randn(7, 3) * 2
    per_component = []
    for u in m.vamp.inputs():  # each pseudo-input through the encoder on its own
        mu, logvar = VAE.posterior(m, u.unsqueeze(0))
        q = Independent(Normal(mu[0], torch.exp(0.5 * logvar[0])), 1)
        per_component.append(q.log_prob(z))  # (7,)
    expected = torch.logsumexp(torch.stack(per_component), 0) - math.log(5)
    torch.testing.assert_close(m.log_prior(z), expected, rtol=1e-5, atol=1e-5)


def test_log_mixture_in_passes_equals_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    mu, logvar, z = torch.randn(4, 3), torch.randn(4, 3), torch.randn(2, 5, 3)
    whole = log_mixture(z, mu, logvar)
    monkeypatch.setattr("vaekit.models.priors.ROWS_PER_PASS", 12)  # one z row per pass
    torch.testing.assert_close(log_mixture(z, mu, logvar), whole)


@pytest.mark.parametrize("kind", list(KINDS))
def test_vamp_kl_matches_a_monte_carlo_estimate_with_many_samples(kind: str) -> None:
    m = model(kind=kind)
    _, shape, classes = KINDS[kind]
    x = torch.rand((1, *shape), generator=torch.Generator().manual_seed(1))
    n = 40_000
    # a conditional model: this example's label, and the pseudo-inputs' labels 0 1 2 0 1
    y, pseudo = (torch.tensor([2]), torch.arange(5) % classes) if classes else (None, None)
    with torch.no_grad():
        y_n = None if y is None else y.expand(n)
        terms, _ = m.elbo_terms(
            x.expand(n, *shape), y_n, generator=torch.Generator().manual_seed(3)
        )
        mu, logvar = VAE.posterior(m, x, y)
        mu_k, logvar_k = VAE.posterior(m, m.vamp.inputs(), pseudo)  # type: ignore[union-attr]
    assert mu.shape[1] == (8 if kind == "conv-spatial" else 3)
    q = Independent(Normal(mu[0], torch.exp(0.5 * logvar[0])), 1)
    p = MixtureSameFamily(
        Categorical(torch.ones(5)), Independent(Normal(mu_k, torch.exp(0.5 * logvar_k)), 1)
    )
    z = q.sample((n,))
    plain = q.log_prob(z) - p.log_prob(z)
    stderr = math.sqrt(float(plain.var() + terms.kl.var()) / n)
    assert abs(float(terms.kl.mean() - plain.mean())) < 4 * stderr
    assert float(plain.mean()) > 0  # a KL, and far from 0 here: the check has teeth


def test_monte_carlo_kl_with_the_standard_prior_matches_the_closed_form() -> None:
    m = model("iaf", "standard")
    m.flow = IAF(3, 0)  # no steps: q is the Gaussian, whose KL has a closed form
    x = images(1).expand(40_000, *SHAPE)
    with torch.no_grad():
        terms, _ = m.elbo_terms(x, generator=torch.Generator().manual_seed(0))
        mu, logvar = VAE.posterior(m, x[:1])
    closed = 0.5 * float((mu.pow(2) + logvar.exp() - logvar - 1).sum())
    assert abs(float(terms.kl.mean()) - closed) < 4 * float(terms.kl.std()) / 200


@pytest.mark.parametrize("posterior", ["gaussian", "iaf"])
def test_conditional_vamp_reads_its_pseudo_labels_once_and_refuses_damaged_ones(
    posterior: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pseudo-labels' range check reads two values (a host sync each on a GPU): it runs
    when they are first read and again only after they change, not at every step; damaged
    labels (written in place, or replaced) are still refused in one line."""
    m = model(posterior, kind="conditional", flow_context=2 if posterior == "iaf" else 0)
    assert isinstance(m, ComposedVAE) and m.vamp is not None and m.vamp.labels is not None
    reads: list[str] = []  # min/max of any tensor over the pseudo-labels' memory
    labels_at = m.vamp.labels.data_ptr()

    def counting(read: Any) -> Any:
        def counted(t: torch.Tensor, *a: Any) -> Any:
            if t.data_ptr() == labels_at:
                reads.append(read.__name__)
            return read(t, *a)

        return counted

    for name in ("min", "max"):
        monkeypatch.setattr(torch.Tensor, name, counting(getattr(torch.Tensor, name)))
    x, y = images(4), torch.tensor([0, 1, 2, 1])
    m.train()
    for _ in range(3):
        m.elbo_terms(x, y)[0].kl.sum().backward()
        m.sample(2, 1)
    assert 0 < len(reads) <= 2, reads  # one check, not one per step
    m.vamp.labels[1] = 7  # in place
    with pytest.raises(DataError, match=r"^labels must be classes 0 to 2; got 0\.\.7$"):
        m.elbo_terms(x, y)
    m.vamp.labels = torch.arange(5) % 3 - 1  # replaced
    with pytest.raises(DataError, match=r"^labels must be classes 0 to 2; got -1\.\.1$"):
        m.sample(2, 1)
    m.vamp.labels = torch.arange(5) % 3
    assert torch.isfinite(m.elbo_terms(x, y)[0].kl).all()


# -- the inverse autoregressive flow --------------------------------------------------------------
def spread(flow: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.5 * torch.randn_like(p))
    return flow


def test_iaf_log_det_equals_the_autograd_jacobian() -> None:
    flow = spread(IAF(4, 3))
    for z0 in torch.randn(5, 4):
        _, log_det = flow(z0)
        j = jacobian(lambda v: flow(v)[0], z0)  # (4, 4)
        torch.testing.assert_close(log_det, torch.linalg.slogdet(j).logabsdet, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("reverse", [False, True])
def test_each_step_is_autoregressive_and_inverts_dimension_by_dimension(reverse: bool) -> None:
    order = torch.arange(1, 5).flip(0) if reverse else torch.arange(1, 5)
    step = spread(IAFStep(order, 8))
    z = torch.randn(4)
    j = jacobian(lambda v: step(v)[0], z)  # j[i, k] = dz_t,i / dz_k
    ordered = j[order.argsort()][:, order.argsort()]  # rows and columns in the step's order
    assert torch.equal(ordered.triu(1), torch.zeros(4, 4))  # lower-triangular in its ordering
    assert bool((ordered.diagonal() > 0).all())  # sigma > 0: invertible
    # invert it by solving for one dimension after another, in its order
    out, _ = step(z)
    back = torch.zeros(4)
    for i in order.argsort():
        h = torch.nn.functional.elu(step.hidden(back))
        gate = torch.sigmoid(step.s(h))[i]
        back[i] = (out[i] - (1 - gate) * step.m(h)[i]) / gate
    torch.testing.assert_close(back, z, rtol=1e-4, atol=1e-5)


def test_spatial_iaf_log_det_equals_the_autograd_jacobian_and_mixes_no_positions() -> None:
    c, h, w = 3, 2, 2
    flow = spread(SpatialIAF((c, h, w), 3))
    order = [torch.arange(c), torch.arange(c).flip(0)]  # each step's channel ordering
    for z0 in torch.randn(3, c * h * w):
        _, log_det = flow(z0.unsqueeze(0))
        j = jacobian(lambda v: flow(v.unsqueeze(0))[0][0], z0)  # (12, 12), z flattened C, h, w
        torch.testing.assert_close(
            log_det[0], torch.linalg.slogdet(j).logabsdet, rtol=1e-5, atol=1e-5
        )
        blocks = j.view(c, h * w, c, h * w)  # [out channel, out position, in channel, in pos]
        for p in range(h * w):
            for q in range(h * w):
                if p != q:  # no position reads another
                    assert torch.equal(blocks[:, p, :, q], torch.zeros(c, c))
    # one step alone: autoregressive over the channels at every position
    step_flow = spread(SpatialIAF((c, h, w), 1))
    j = jacobian(lambda v: step_flow(v.unsqueeze(0))[0][0], torch.randn(c * h * w))
    blocks = j.view(c, h * w, c, h * w)
    for p in range(h * w):
        block = blocks[:, p, :, p][order[0]][:, order[0]]
        assert torch.equal(block.triu(1), torch.zeros(c, c)) and bool((block.diagonal() > 0).all())


def test_the_spatial_iaf_model_s_log_q_is_the_base_density_less_the_log_det() -> None:
    m = model("iaf", "standard", "conv-spatial")
    assert isinstance(m, IAFVAE) and isinstance(m.flow, SpatialIAF) and m.latent_dim == 8
    x = torch.rand((1, *CONV_SHAPE), generator=torch.Generator().manual_seed(1))
    eps = torch.randn(1, 8)
    with torch.no_grad():
        out = m(x, eps=eps)
        mu, logvar = VAE.posterior(m, x)
    z0 = mu[0] + torch.exp(0.5 * logvar[0]) * eps[0]
    j = jacobian(lambda v: m.flow(v.unsqueeze(0))[0][0], z0)
    base = Independent(Normal(mu[0], torch.exp(0.5 * logvar[0])), 1).log_prob(z0)
    torch.testing.assert_close(
        out.log_q[0], base - torch.linalg.slogdet(j).logabsdet, rtol=1e-5, atol=1e-5
    )


def test_iaf_log_q_is_the_base_density_less_the_log_det() -> None:
    m = model("iaf", "standard")
    assert isinstance(m, IAFVAE)
    x = images(1)
    eps = torch.randn(1, 3)
    with torch.no_grad():
        out = m(x, eps=eps)
        mu, logvar = VAE.posterior(m, x)
    z0 = mu[0] + torch.exp(0.5 * logvar[0]) * eps[0]
    j = jacobian(lambda v: m.flow(v)[0], z0)
    base = Independent(Normal(mu[0], torch.exp(0.5 * logvar[0])), 1).log_prob(z0)
    expected = base - torch.linalg.slogdet(j).logabsdet
    torch.testing.assert_close(out.log_q[0], expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.z[0], m.flow(z0)[0])


# -- the flow's context h (model.flow_context) ----------------------------------------------------
def context_of(m: VAE, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor | None:
    """h of x, computed apart from the model's `encoded`: its context head on the encoder's
    features (a spatial latent's: the conv encoder's last level); None without one."""
    head = getattr(m, "context_head", None)
    if head is None:
        return None
    if m.latent_shape is not None:
        return head(m.encoder.body(x))
    cond = m._cond(y, x.shape[0], x.device)
    return head(m.encoder(x) if cond is None else m.encoder(x, cond))


@pytest.mark.parametrize("spatial", [False, True])
def test_iaf_with_context_log_det_equals_the_autograd_jacobian_with_h_fixed(spatial: bool) -> None:
    c, h, w = 3, 2, 2
    flow = spread(SpatialIAF((c, h, w), 3, context=5) if spatial else IAF(4, 3, context=5))
    d = c * h * w if spatial else 4
    for z0 in torch.randn(3, d):
        ctx = torch.randn(1, 5, h, w) if spatial else torch.randn(1, 5)
        _, log_det = flow(z0.unsqueeze(0), ctx)
        j = jacobian(lambda v, ctx=ctx: flow(v.unsqueeze(0), ctx)[0][0], z0)  # h fixed
        torch.testing.assert_close(
            log_det[0], torch.linalg.slogdet(j).logabsdet, rtol=1e-5, atol=1e-5
        )


def test_the_context_enters_each_step_unmasked_and_keeps_it_triangular() -> None:
    order = torch.arange(1, 5)
    step = spread(IAFStep(order, 8, context=3))
    z, ctx = torch.randn(4), torch.randn(3)
    j = jacobian(lambda v: step(v, ctx)[0], z)
    assert torch.equal(j.triu(1), torch.zeros(4, 4)) and bool((j.diagonal() > 0).all())
    # every output, the first one too (which reads no z), depends on h
    jh = jacobian(lambda v: step(z, v)[0], ctx)  # (4, 3)
    assert bool((jh.abs().sum(1) > 0).all())


@pytest.mark.parametrize("kind", list(KINDS))
def test_the_context_changes_the_flow_s_output(kind: str) -> None:
    m = model("iaf", "standard", kind, flow_context=4)
    assert isinstance(m, IAFVAE) and m.context_head is not None
    _, shape, classes = KINDS[kind]
    x = torch.rand((2, *shape), generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 2]) if classes else None
    eps = torch.randn(2, m.latent_dim)
    with torch.no_grad():
        mu, logvar, h = m.encoded(x, y)
        torch.testing.assert_close(h, context_of(m, x, y))
        z0 = mu + torch.exp(0.5 * logvar) * eps
        out = m(x, y, eps=eps)
        torch.testing.assert_close(out.z, m.flow(z0, h)[0])
        other = m.flow(z0, h + 1.0)[0]  # the same z_0, another h
        assert float((other - out.z).abs().min()) > 1e-4  # every value moves
        m.context_head.weight.zero_()  # the model's own h, through the whole forward pass
        moved = m(x, y, eps=eps)
    assert float((moved.z - out.z).abs().min()) > 1e-4
    assert float((moved.log_q - out.log_q).abs().min()) > 1e-6


@pytest.mark.parametrize("kind", ["mlp", "conv-spatial"])
def test_iaf_with_context_log_q_is_the_base_density_less_the_jacobian_s(kind: str) -> None:
    m = model("iaf", "standard", kind, flow_context=3)
    _, shape, _ = KINDS[kind]
    x = torch.rand((1, *shape), generator=torch.Generator().manual_seed(1))
    eps = torch.randn(1, m.latent_dim)
    with torch.no_grad():
        out = m(x, eps=eps)
        mu, logvar = VAE.posterior(m, x)  # the Gaussian, without the context head
        h = context_of(m, x)
    z0 = mu[0] + torch.exp(0.5 * logvar[0]) * eps[0]
    j = jacobian(lambda v: m.flow(v.unsqueeze(0), h)[0][0], z0)
    base = Independent(Normal(mu[0], torch.exp(0.5 * logvar[0])), 1).log_prob(z0)
    torch.testing.assert_close(
        out.log_q[0], base - torch.linalg.slogdet(j).logabsdet, rtol=1e-5, atol=1e-5
    )


# -- the importance-weighted bound ----------------------------------------------------------------
def plain_log_px(
    m: VAE, x: torch.Tensor, k: int, seed: int, y: torch.Tensor | None = None
) -> torch.Tensor:
    """log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x), one example and one sample at a time:
    q through autograd's Jacobian of the flow, p(z) through torch.distributions (a
    conditional model's components at the pseudo-labels 0, 1, ..., as many as it has)."""
    out = []
    pseudo = torch.arange(5) % m.num_classes if m.conditional else None
    mu_k, logvar_k = VAE.posterior(m, m.vamp.inputs(), pseudo)  # type: ignore[union-attr]
    prior = MixtureSameFamily(
        Categorical(torch.ones(mu_k.shape[0])), Independent(Normal(mu_k, (0.5 * logvar_k).exp()), 1)
    )
    for i in range(x.shape[0]):
        yi = None if y is None else y[i : i + 1]
        mu, logvar = VAE.posterior(m, x[i : i + 1], yi)
        h = context_of(m, x[i : i + 1], yi)  # None without model.flow_context
        q0 = Independent(Normal(mu[0], torch.exp(0.5 * logvar[0])), 1)
        eps = _example_noise(i, k, m.latent_dim, seed, torch.device("cpu"))
        log_w = []
        for e in eps:
            z0 = mu[0] + torch.exp(0.5 * logvar[0]) * e

            def flow(v: torch.Tensor, h: torch.Tensor | None = h) -> torch.Tensor:
                return m.flow(v.unsqueeze(0), h)[0][0]

            z = flow(z0)
            log_q = q0.log_prob(z0) - torch.linalg.slogdet(jacobian(flow, z0))[1]
            logits = m.decode(z.unsqueeze(0), yi)[0]
            log_px_z = Bernoulli(logits=logits, validate_args=False).log_prob(x[i]).sum()
            log_w.append(log_px_z + prior.log_prob(z) - log_q)
        out.append(torch.logsumexp(torch.stack(log_w), 0) - math.log(k))
    return torch.stack(out).double()


@pytest.mark.parametrize("context", [0, 4])
@pytest.mark.parametrize("kind", ["conv-spatial", "conditional", "mlp", "conv"])
def test_iw_estimate_of_a_spatial_or_conditional_model_matches_a_plain_loop(
    kind: str, context: int
) -> None:
    m = model("iaf", "vamp", kind, flow_context=context)
    _, shape, classes = KINDS[kind]
    x = torch.rand((3, *shape), generator=torch.Generator().manual_seed(1))
    y = torch.tensor([2, 0, 1]) if classes else None
    with torch.no_grad():
        iw = importance_sampling(m, x, 5, y, seed=5, workers=1)
        plain = plain_log_px(m, x, 5, seed=5, y=y)
    torch.testing.assert_close(iw.log_px, plain, rtol=1e-5, atol=1e-4)


def test_iw_estimate_matches_a_plain_loop_and_is_above_the_elbo() -> None:
    m = model("iaf", "vamp")
    x = images(4)
    with torch.no_grad():
        iw = importance_sampling(m, x, 6, seed=5, workers=1)
        plain = plain_log_px(m, x, 6, seed=5)
    torch.testing.assert_close(iw.log_px, plain, rtol=1e-5, atol=1e-4)
    # on average over examples and draws, log p_K >= the ELBO (Burda et al. 2015)
    many = images(200, seed=2)
    with torch.no_grad():
        log_px = importance_sampling(m, many, 32, seed=1, workers=1).log_px.mean()
        elbo = -elbo_stats(m, many, seed=9)["nelbo"]
    assert float(log_px) > elbo


def vaekit_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """`vaekit ARGV` in this process (a fresh process each would double the test's time):
    its standard output, after a zero exit."""
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def test_training_with_iw_samples_runs_on_the_model_s_own_weights(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    vaekit_cli(capsys, "train", "--data", "noise", *TINY_FLAGS, "--out", str(tmp_path / "r"),
               "--model.prior", "vamp", "--model.pseudo_inputs", "4",
               "--loss.iw_samples", "3")  # fmt: skip
    assert isinstance(vaekit.load(tmp_path / "r"), ComposedVAE)


# -- sampling -------------------------------------------------------------------------------------
def test_samples_come_from_a_random_pseudo_input_s_posterior() -> None:
    m = model()
    with torch.no_grad():
        mu_k, logvar_k = m.components()
        z = m.sample_prior(4000, torch.Generator().manual_seed(0))
    # every draw lies near one component: its distance in that component's sigmas is small
    dist = ((z[:, None] - mu_k) / torch.exp(0.5 * logvar_k)).pow(2).sum(-1).min(1).values
    assert float(dist.quantile(0.99)) < 20  # chi^2 with 3 degrees of freedom
    torch.testing.assert_close(z.mean(0), mu_k.mean(0), atol=0.15, rtol=0.0)
    assert m.sample(3, generator=torch.Generator().manual_seed(0)).shape == (3, *SHAPE)


# -- the composition, through the CLI -------------------------------------------------------------
CONV = ["--model.arch", "conv", "--model.channels", "4,8", "--model.blocks_per_level", "0",
        "--data.image_size", "8"]  # fmt: skip
OPTIONS = {
    "vamp": ["--model.prior", "vamp", "--model.pseudo_inputs", "6"],
    "iaf": ["--model.posterior", "iaf", "--model.flow_steps", "2"],
    "iaf+vamp": ["--model.posterior", "iaf", "--model.prior", "vamp", "--model.pseudo_inputs", "6"],
    "iaf+context": ["--model.posterior", "iaf", "--model.flow_context", "8"],
}


ARCHS = {"mlp": [], "conv": CONV, "conv-spatial": [*CONV, "--model.latent_channels", "2"],
         "conditional": ["--model.conditional"]}  # fmt: skip


@pytest.mark.parametrize("option", list(OPTIONS))
@pytest.mark.parametrize("arch", list(ARCHS))
def test_train_save_load_evaluate_sample_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], arch: str, option: str
) -> None:
    run = tmp_path / "run"
    flags = [*TINY_FLAGS, "--data.noise_examples", "96", *ARCHS[arch]]
    vaekit_cli(capsys, "train", "--data", "noise", *flags, "--out", str(run), *OPTIONS[option])
    loaded = vaekit.load(run)
    expected = IAFVAE if "iaf" in option else ComposedVAE
    assert type(loaded) is expected
    assert loaded.prior == ("vamp" if "vamp" in option else "standard")
    architecture = json.loads((run / "config.json").read_text())["architecture"]
    assert architecture.get("posterior", "gaussian") == ("iaf" if "iaf" in option else "gaussian")
    assert architecture["prior"] == loaded.prior
    if "iaf" in option:  # recorded, and read back: the context head's weights with it
        context = 8 if "context" in option else 0
        assert architecture["flow_context"] == context == getattr(loaded, "flow_context", -1)
        assert (getattr(loaded, "context_head", None) is None) == (context == 0)
    stats = json.loads(vaekit_cli(capsys, "evaluate", str(run), "--iw-samples", "4", "--json"))
    assert stats["log_px"] >= stats["iw_elbo"] and math.isfinite(stats["nelbo"])
    assert "kl_per_dim" not in stats and "active_units" in stats
    label = ["--label", "2"] if arch == "conditional" else []
    vaekit_cli(capsys, "sample", str(run), *label, "--out", str(tmp_path / "s.png"))
    assert (tmp_path / "s.png").stat().st_size > 0
    vaekit_cli(capsys, "report", str(run), "--iw-samples", "2", "--max-test", "16")
    assert (run / "report.html").exists()
    if arch == "conv-spatial":
        assert loaded.latent_shape is not None and loaded.latent_shape[0] == 2
        assert isinstance(getattr(loaded, "flow", SpatialIAF((1, 1, 1), 1)), SpatialIAF)
    if arch == "conditional":
        assert loaded.conditional
        z = loaded.sample_prior(2, torch.Generator().manual_seed(0))
        assert not torch.equal(*(loaded.decode_images(z, torch.tensor([c, c])) for c in (0, 5)))


def test_vamp_takes_a_spatial_latent(tmp_path: Path) -> None:
    cfg = ModelConfig(arch="conv", channels=[4, 8], blocks_per_level=0, latent_channels=2,
                      prior="vamp", pseudo_inputs=3)  # fmt: skip
    m = VAE.from_config(cfg, (1, 8, 8))
    x = torch.rand(2, 1, 8, 8)
    assert m.log_importance_weights(x, 3).shape == (3, 2)
    assert m.sample(2).shape == (2, 1, 8, 8)
    m.save_pretrained(tmp_path / "m")
    assert type(VAE.from_pretrained(tmp_path / "m")) is ComposedVAE


def test_the_hub_card_names_the_flow_and_the_prior() -> None:
    from vaekit.io import hub

    plan = model("iaf", "vamp").push_to_hub("alice/tiny", dry_run=True)
    text = plan.files[hub.CARD_FILE].decode()
    assert "an IAF posterior of 2 flow steps, a VampPrior of 5 pseudo-inputs" in text


def test_a_context_model_saves_loads_and_pushes_with_its_context(tmp_path: Path) -> None:
    m = model("iaf", "standard", "conv-spatial", flow_context=3)
    m.save_pretrained(tmp_path / "m")
    loaded = VAE.from_pretrained(tmp_path / "m")
    assert isinstance(loaded, IAFVAE) and loaded.flow_context == 3
    x, eps = torch.rand(2, *CONV_SHAPE), torch.randn(2, 8)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, eps=eps).log_q, m(x, eps=eps).log_q)
    plan = m.push_to_hub("alice/tiny", dry_run=True)
    from vaekit.io import hub

    assert (
        "2 flow steps reading a context of 3 from the encoder" in plan.files[hub.CARD_FILE].decode()
    )
    assert json.loads(plan.files["config.json"])["architecture"]["flow_context"] == 3


def test_an_iaf_run_saved_before_flow_context_loads_without_one(tmp_path: Path) -> None:
    m = model("iaf", "standard")
    m.save_pretrained(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    del meta["architecture"]["flow_context"]  # as written before the option existed
    (tmp_path / "m" / "config.json").write_text(json.dumps(meta))
    loaded = VAE.from_pretrained(tmp_path / "m")
    assert isinstance(loaded, IAFVAE) and loaded.flow_context == 0
    assert loaded.context_head is None


def test_the_gaussian_vae_stays_the_plain_vae(tmp_path: Path) -> None:
    m = VAE.from_config(ModelConfig(hidden=[16], latent_dim=3), SHAPE)
    assert type(m) is VAE and m.closed_form_kl
    assert "prior" not in m.architecture() and "posterior" not in m.architecture()


# -- refusals -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "flags, needle",
    [
        (["--model.posterior", "iaf", "--loss.free_bits", "0.5"], "set loss.free_bits 0"),
        (["--model.prior", "vamp", "--loss.free_bits", "0.5"], "set loss.free_bits 0"),
        (["--model.posterior", "vq", "--model.prior", "vamp"], "set model.prior standard"),
        ([*CONV, "--model.latent_channels", "2", "--model.posterior", "iaf",
          "--model.conditional"], "set model.latent_channels 0"),
        (["--model.prior", "vamp", "--model.arch", "autoencoderkl"], "mlp and conv"),
        ([*CONV, "--model.latent_channels", "2", "--model.prior", "vamp",
          "--model.conditional"], "set model.latent_channels 0"),
        ([*CONV, "--model.posterior", "iaf", "--model.linear_path", "--model.likelihood",
          "gaussian"], "does not take it"),
    ],
)  # fmt: skip
def test_what_cannot_work_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], needle: str
) -> None:
    code = cli.main(["train", "--data", "noise", *TINY_FLAGS, "--out", str(tmp_path / "o"), *flags])
    assert_one_line_error(code, capsys.readouterr().err, needle)


def test_the_kl_chart_is_refused_for_a_monte_carlo_kl() -> None:
    from vaekit.viz.figures import kl_chart

    with pytest.raises(ConfigError, match="no KL per latent dimension"):
        kl_chart(model(), images(4))


@pytest.mark.parametrize(
    "setting, value", [("pseudo_inputs", 0), ("pseudo_inputs", 2.5), ("prior", "gmm")]
)
def test_bad_settings_in_python_are_one_line(setting: str, value: object) -> None:
    cfg = ModelConfig(hidden=[16], latent_dim=3)
    built = VAE.from_config(cfg, SHAPE)
    with pytest.raises(ConfigError, match=setting):
        ComposedVAE(built.encoder, built.decoder, latent_dim=3, input_shape=SHAPE,
                    **{setting: value})  # type: ignore[arg-type]  # fmt: skip


def test_a_context_needs_an_encoder_of_features() -> None:
    """An encoder that gives (mu, logvar) itself has no features for h's head: one line."""

    class Moments(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Linear(36, 6)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return self.net(x.flatten(1)).chunk(2, dim=1)

    decoder = VAE.from_config(ModelConfig(hidden=[16], latent_dim=3), SHAPE).decoder
    assert isinstance(IAFVAE(Moments(), decoder, latent_dim=3, input_shape=SHAPE), IAFVAE)
    with pytest.raises(ConfigError, match="set model.flow_context 0"):
        IAFVAE(Moments(), decoder, latent_dim=3, input_shape=SHAPE, flow_context=2)
    with pytest.raises(ConfigError, match="flow_context must be a whole number from 0 to 4096"):
        IAFVAE(Moments(), decoder, latent_dim=3, input_shape=SHAPE, flow_context=-1)


def test_an_unknown_prior_in_config_json_is_one_line(tmp_path: Path) -> None:
    model().save_pretrained(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    meta["architecture"]["prior"] = "gmm"
    (tmp_path / "m" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(vaekit.errors.CheckpointError, match="unknown prior 'gmm'"):
        VAE.from_pretrained(tmp_path / "m")
