"""The objectives beside the ELBO (loss.objective tcvae, factorvae, wae_mmd, infovae): each
estimator against a plain implementation, FactorVAE's discriminator learning and resuming
bit-identically, each objective through the CLI, what they refuse, and an ELBO step that
does none of their work."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

import vaekit
from conftest import tiny_config
from test_adversarial import assert_resumed_adversary
from vaekit import divergences
from vaekit.cli import main
from vaekit.config import Config, LossConfig, ModelConfig, load_config
from vaekit.errors import ConfigError
from vaekit.io import checkpoint
from vaekit.models import VAE
from vaekit.training import latent_objectives, objective
from vaekit.training.adversary import LatentAdversary

ROOT = Path(__file__).resolve().parents[1]
OBJECTIVES = ("tcvae", "factorvae", "wae_mmd", "infovae")
SMALL_D = {"loss.factorvae_hidden": 16, "loss.factorvae_layers": 3}  # a tiny discriminator


def _records(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _model(seed: int = 0) -> VAE:
    torch.manual_seed(seed)
    return VAE.from_config(ModelConfig(hidden=[16], latent_dim=3), (1, 8, 8))


# -- beta-TCVAE's decomposition ---------------------------------------------------------------
def _log_normal(z: float, mu: float, logvar: float) -> float:
    return -0.5 * ((z - mu) ** 2 / math.exp(logvar) + logvar + math.log(2 * math.pi))


def _log_sum_exp(values: list[float]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def _loop_tc(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, w: torch.Tensor) -> list:
    """(MI, TC, dim-KL) of each example by plain loops over the batch, in Python floats,
    with importance weights w[i][j] (not logs)."""
    b, d = z.shape
    z_, mu_, lv_, w_ = z.tolist(), mu.tolist(), logvar.tolist(), w.tolist()
    out = []
    for i in range(b):
        dens = [[_log_normal(z_[i][k], mu_[j][k], lv_[j][k]) for k in range(d)] for j in range(b)]
        log_qz_x = sum(dens[i])
        log_qz = _log_sum_exp([math.log(w_[i][j]) + sum(dens[j]) for j in range(b)])
        marginals = [
            _log_sum_exp([math.log(w_[i][j]) + dens[j][k] for j in range(b)]) for k in range(d)
        ]
        log_pz = sum(_log_normal(z_[i][k], 0.0, 0.0) for k in range(d))
        out.append((log_qz_x - log_qz, log_qz - sum(marginals), sum(marginals) - log_pz))
    return out


def _posteriors(b: int = 6, d: int = 3, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(b, d, generator=g, dtype=torch.float64)
    logvar = torch.randn(b, d, generator=g, dtype=torch.float64) * 0.5 - 1.0
    z = mu + torch.exp(0.5 * logvar) * torch.randn(b, d, generator=g, dtype=torch.float64)
    return z, mu, logvar


@pytest.mark.parametrize("estimator", ["mss", "mws"])
def test_the_tc_decomposition_is_the_plain_loops_and_adds_up_to_the_kl_estimate(
    estimator: str,
) -> None:
    z, mu, logvar = _posteriors()
    n = 50
    terms = divergences.tc_decomposition(z, mu, logvar, n, estimator)
    w = divergences.log_weights(6, n, estimator, torch.device("cpu")).exp()
    if estimator == "mws":  # the paper's eq. 3: 1/(N B) for every pair, written out here
        assert torch.allclose(w, torch.full((6, 6), 1.0 / (n * 6), dtype=w.dtype))
    by_loop = torch.tensor(_loop_tc(z, mu, logvar, w), dtype=torch.float32)
    ours = torch.stack([terms.mi, terms.tc, terms.dim_kl], 1)
    assert torch.allclose(ours, by_loop, atol=1e-4), (ours, by_loop)
    # the three terms add up to log q(z|x) - log p(z), whose mean is the closed-form KL
    one_sample_kl = torch.tensor(
        [
            sum(_log_normal(z[i, k].item(), mu[i, k].item(), logvar[i, k].item()) for k in range(3))
            - sum(_log_normal(z[i, k].item(), 0.0, 0.0) for k in range(3))
            for i in range(6)
        ]
    )
    assert torch.allclose(ours.sum(1), one_sample_kl, atol=1e-4)


def _plain_tc(
    z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, n: int, estimator: str
) -> divergences.TCTerms:
    """tc_decomposition as plain autograd writes it: log_q_pairs' (B, B, D) and
    torch.logsumexp over the posteriors (vaekit's until session 12)."""
    pairs = divergences.log_q_pairs(z, mu, logvar)  # (B, B, D)
    w = divergences.log_weights(z.shape[0], max(n, z.shape[0]), estimator, z.device)
    log_qz_x = pairs.diagonal(dim1=0, dim2=1).sum(0)
    log_qz = torch.logsumexp(pairs.sum(2) + w, dim=1)
    log_qz_marginals = torch.logsumexp(pairs + w.unsqueeze(2), dim=1).sum(1)
    log_pz = -0.5 * (z.float().pow(2) + math.log(2 * math.pi)).sum(-1)
    return divergences.TCTerms(
        log_qz_x - log_qz, log_qz - log_qz_marginals, log_qz_marginals - log_pz
    )


@pytest.mark.parametrize("estimator", ["mss", "mws"])
def test_the_tc_decomposition_and_its_gradient_are_the_plain_autograd_ones(estimator: str) -> None:
    # float32, a batch of 64 with posteriors from narrow to wide (logvar -6 to 4): many
    # pairs far below each row's maximum, where the exponent is clamped at -87
    g = torch.Generator().manual_seed(3)
    mu0 = torch.randn(64, 8, generator=g) * 2
    logvar0 = torch.rand(64, 8, generator=g) * 10 - 6
    eps = torch.randn(64, 8, generator=g)
    values, grads = [], []
    for tc in (divergences.tc_decomposition, _plain_tc):
        mu, logvar = mu0.clone().requires_grad_(), logvar0.clone().requires_grad_()
        z = mu + torch.exp(0.5 * logvar) * eps
        t = tc(z, mu, logvar, 60_000, estimator)
        (t.mi.mean() + 6.0 * t.tc.mean() + 2.0 * t.dim_kl.mean()).backward()
        assert mu.grad is not None and logvar.grad is not None
        values.append(torch.stack([t.mi, t.tc, t.dim_kl]).detach())
        grads.append(torch.cat([mu.grad, logvar.grad]))
    assert torch.allclose(values[0], values[1], rtol=1e-6, atol=1e-4 * values[1].abs().max())
    assert torch.allclose(grads[0], grads[1], rtol=1e-5, atol=1e-6 * grads[1].abs().max())


def test_the_tc_log_densities_gradient_is_the_derivative() -> None:
    z, mu, logvar = (t.requires_grad_() for t in _posteriors(b=5, d=3, seed=1))
    own, other = divergences.log_weight_values(5, 50, "mss")
    assert torch.autograd.gradcheck(
        lambda *a: divergences._Aggregate.apply(*a, own, other), (z, mu, logvar)
    )


def test_the_kl_estimate_of_the_terms_is_the_closed_form_kl_on_average() -> None:
    _, mu, logvar = _posteriors(b=8, d=2, seed=1)
    g = torch.Generator().manual_seed(2)
    total = torch.zeros(8, dtype=torch.float64)
    draws = 4000
    for _ in range(draws):
        z = mu + torch.exp(0.5 * logvar) * torch.randn(8, 2, generator=g, dtype=torch.float64)
        t = divergences.tc_decomposition(z, mu, logvar, 100)
        total += (t.mi + t.tc + t.dim_kl).double()
    closed = (0.5 * (mu**2 + logvar.exp() - logvar - 1)).sum(1)
    assert torch.allclose(total / draws, closed, atol=0.05), (total / draws, closed)


def _tc_of(mu: torch.Tensor, estimator: str, draws: int = 20) -> float:
    """The mean TC estimate over `draws` of a batch that is the whole data set."""
    logvar = torch.full_like(mu, math.log(0.3**2))
    g = torch.Generator().manual_seed(0)
    values = []
    for _ in range(draws):
        z = mu + 0.3 * torch.randn(mu.shape, generator=g)
        values.append(divergences.tc_decomposition(z, mu, logvar, mu.shape[0], estimator).tc)
    return float(torch.stack(values).mean())


def test_tc_is_zero_for_a_factorised_aggregate_and_positive_for_a_correlated_one() -> None:
    a = torch.linspace(-2, 2, 8)
    factorised = torch.cartesian_prod(a, a)  # every (a_i, a_j): q(z) = q(z_1) q(z_2)
    correlated = torch.linspace(-2, 2, 64).unsqueeze(1).expand(64, 2)  # z_1 = z_2
    assert abs(_tc_of(factorised, "mss")) < 0.02
    assert _tc_of(correlated, "mss") > 0.8
    # MWS's weights sum to 1/N: its TC is (D - 1) log N too high, as its docstring says
    assert _tc_of(factorised, "mws") == pytest.approx(math.log(64), abs=0.02)


def test_mss_estimates_the_whole_data_sets_q_from_a_batch_and_mws_n_times_too_low() -> None:
    # N = 400 posteriors; batches of 40 drawn from them: q(z_i) = exp(log q(z_i|x_i) - MI),
    # against the exact (1/N) sum_n q(z_i|x_n) over all 400
    g = torch.Generator().manual_seed(0)
    n, b = 400, 40
    mu_all = torch.randn(n, 2, generator=g, dtype=torch.float64) * 2
    logvar_all = torch.zeros_like(mu_all)
    gaps: dict[str, list[torch.Tensor]] = {"mss": [], "mws": []}
    for _ in range(50):
        rows = torch.randperm(n, generator=g)[:b]
        mu, logvar = mu_all[rows], logvar_all[rows]
        z = mu + torch.randn(b, 2, generator=g, dtype=torch.float64)
        pairs = divergences.log_q_pairs(z, mu_all, logvar_all).sum(2)  # (B, N)
        exact = torch.logsumexp(pairs, dim=1) - math.log(n)
        log_qz_x = pairs[torch.arange(b), rows]
        for estimator, gap in gaps.items():
            t = divergences.tc_decomposition(z, mu, logvar, n, estimator)
            gap.append(log_qz_x - t.mi - exact)
    mss, mws = torch.cat(gaps["mss"]), torch.cat(gaps["mws"])
    assert float(mss.exp().mean()) == pytest.approx(1.0, abs=0.04)  # unbiased for q(z)
    assert float(mws.mean()) == pytest.approx(-math.log(n), abs=0.5)


def test_a_tc_batch_too_big_for_memory_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from vaekit import limits

    monkeypatch.setattr(limits, "available_memory", lambda: 2**20)
    z = torch.zeros(64, 4097)
    with pytest.raises(ConfigError, match="batch of 64 with 4,097 latents.*lower train.batch"):
        divergences.tc_decomposition(z, z, z, 1000)


# -- MMD --------------------------------------------------------------------------------------
def _loop_kernel(a: list[float], b: list[float], kind: str) -> float:
    d2 = sum((x - y) ** 2 for x, y in zip(a, b, strict=True))
    dim = len(a)
    if kind == "rbf":
        return math.exp(-d2 / (2 * dim))
    return sum(2 * dim * s / (2 * dim * s + d2) for s in (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0))


def _loop_mmd(q: torch.Tensor, p: torch.Tensor, kind: str) -> float:
    q_, p_ = q.tolist(), p.tolist()
    n, m = len(q_), len(p_)
    qq = sum(_loop_kernel(q_[i], q_[j], kind) for i in range(n) for j in range(n) if i != j)
    pp = sum(_loop_kernel(p_[i], p_[j], kind) for i in range(m) for j in range(m) if i != j)
    qp = sum(_loop_kernel(q_[i], p_[j], kind) for i in range(n) for j in range(m))
    return qq / (n * (n - 1)) + pp / (m * (m - 1)) - 2 * qp / (n * m)


@pytest.mark.parametrize("kind", ["imq", "rbf"])
def test_mmd_is_the_plain_double_loops_u_statistic(kind: str) -> None:
    g = torch.Generator().manual_seed(0)
    q, p = torch.randn(7, 3, generator=g) + 0.5, torch.randn(5, 3, generator=g)
    assert float(divergences.mmd(q, p, kind)) == pytest.approx(_loop_mmd(q, p, kind), rel=1e-4)


@pytest.mark.parametrize("kind", ["imq", "rbf"])
def test_mmd_is_unbiased_zero_on_one_distribution_and_positive_on_two(kind: str) -> None:
    g = torch.Generator().manual_seed(1)
    same = torch.stack(
        [divergences.mmd(torch.randn(16, 4, generator=g), torch.randn(16, 4, generator=g), kind)
         for _ in range(400)]
    )  # fmt: skip
    error = same.std() / math.sqrt(len(same))
    assert abs(float(same.mean())) < 3 * float(error)  # mean 0: the U-statistic is unbiased
    assert float(same.min()) < 0  # an unbiased estimate of 0 goes below it
    shifted = divergences.mmd(torch.randn(16, 4, generator=g) + 1.0, torch.randn(16, 4), kind)
    assert float(shifted) > 10 * float(error)


# -- FactorVAE's discriminator ----------------------------------------------------------------
def _latent_adversary(**loss: Any) -> LatentAdversary:
    options = {"loss.objective": "factorvae", **SMALL_D, "loss.factorvae_lr": 1e-3}
    config = load_config(None, options)
    config = dataclasses.replace(config, loss=dataclasses.replace(config.loss, **loss))
    return LatentAdversary(config, _model(), torch.device("cpu"), "fp32")


@pytest.mark.parametrize("correlated", [True, False])
def test_the_discriminator_tells_q_from_its_permuted_marginals_only_when_they_differ(
    correlated: bool,
) -> None:
    adversary = _latent_adversary()
    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        z = torch.randn(64, 3, generator=g)
        if correlated:
            z[:, 1] = z[:, 0]  # all the mass on a plane the permuted copy leaves
        adversary.update(z, latent_objectives.permute_dims(z, g))
    z = torch.randn(512, 3, generator=g)
    if correlated:
        z[:, 1] = z[:, 0]
    with torch.no_grad():
        tc = float(adversary.discriminator(z).mean())  # the VAE's TC estimate
        loss = float(adversary.loss(adversary.discriminator(z), adversary.discriminator(
            latent_objectives.permute_dims(z, g))))  # fmt: skip
    if correlated:
        assert tc > 0.5 and loss < math.log(4) - 0.2
    else:  # nothing to tell apart: chance, log 4
        assert abs(tc) < 0.3 and loss == pytest.approx(math.log(4), abs=0.05)


def test_the_discriminators_update_is_one_pass_with_the_two_passes_gradient() -> None:
    adversary = _latent_adversary()
    d = adversary.discriminator
    g = torch.Generator().manual_seed(0)
    z = torch.randn(32, 3, generator=g)
    fake = latent_objectives.permute_dims(z, g)
    calls: list[int] = []
    hook = d.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    loss = adversary.backward(z, fake, first=True)
    hook.remove()
    assert calls == [64]  # real and fake stacked: one product per layer, not two
    d.requires_grad_(True)
    two = adversary.loss(d(z), d(fake))
    grads = torch.autograd.grad(two, list(d.parameters()))
    d.requires_grad_(False)
    assert float(loss) == pytest.approx(float(two.detach()), rel=1e-6)
    for p, expected in zip(d.parameters(), grads, strict=True):
        assert p.grad is not None and torch.allclose(p.grad, expected, rtol=1e-5, atol=1e-7)


def test_permuting_dims_keeps_each_marginal_and_breaks_the_rows() -> None:
    z = torch.arange(40.0).view(10, 4)
    p = latent_objectives.permute_dims(z, torch.Generator().manual_seed(0))
    for k in range(4):
        assert sorted(p[:, k].tolist()) == z[:, k].tolist()
    assert not torch.equal(p, z)


class _Stop(vaekit.Callback):
    def __init__(self, at: int) -> None:
        self.at, self.steps = at, 0

    def on_step_end(self, trainer: Any) -> None:
        self.steps += 1
        if self.steps == self.at:
            trainer.stop()


def test_factorvae_resumes_bit_identically(tmp_path: Path) -> None:
    options = {"loss.objective": "factorvae", "loss.tc_weight": 5.0, **SMALL_D, "train.epochs": 3}
    whole = vaekit.train(tiny_config(tmp_path / "whole", **options))
    cfg = tiny_config(tmp_path / "halves", **options)
    vaekit.Trainer(None, cfg, callbacks=[_Stop(6)]).fit()  # mid-way through epoch 2
    saved = checkpoint.load_state(tmp_path / "halves" / checkpoint.STATE_FILE)
    assert saved["global_step"] == 6 and saved["adversary"]["optimizer"]["state"]
    halves = vaekit.train(cfg, resume=True)
    assert_resumed_adversary(whole, halves)
    last = _records(whole)[-1], _records(halves)[-1]
    assert last[0]["train_tc"] == last[1]["train_tc"]
    assert last[0]["train_disc_loss"] == last[1]["train_disc_loss"]
    assert not any("disc" in k for k in vaekit.load(halves).state_dict())  # state.pt only


# -- the objectives in a step -----------------------------------------------------------------
def _terms(cfg: LossConfig, model: VAE, seed: int = 0, **kw: Any) -> objective.StepTerms:
    x = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    noise = objective.Noise(torch.Generator().manual_seed(seed))
    return objective.compute(model, x, None, cfg, 0, noise, dataset_size=200, **kw)


def _f(t: torch.Tensor) -> float:
    return float(t.detach())


def test_each_objective_is_recon_plus_its_weighted_terms() -> None:
    model = _model()
    elbo = _terms(LossConfig(), model)
    weights = {"mi_weight": 2.0, "tc_weight": 3.0, "dim_kl_weight": 0.5}
    tc = _terms(LossConfig(objective="tcvae", **weights), model)
    mi, tcv, dim_kl = (_f(v) for v in tc.extra)
    assert _f(tc.loss) == pytest.approx(_f(tc.recon) + 2 * mi + 3 * tcv + 0.5 * dim_kl, rel=1e-5)
    # the same draw as the ELBO's: the same reconstruction, KL and reported -ELBO
    assert _f(tc.recon) == _f(elbo.recon) and _f(tc.nelbo) == _f(elbo.nelbo)
    wae = _terms(LossConfig(objective="wae_mmd", mmd_weight=7.0), model)
    assert _f(wae.loss) == pytest.approx(_f(wae.recon) + 7 * _f(wae.extra[0]), rel=1e-5)
    info = _terms(LossConfig(objective="infovae", info_alpha=-0.5, mmd_weight=4.0), model)
    expected = _f(info.recon) + 1.5 * _f(info.kl) + 2.5 * _f(info.extra[0])
    assert _f(info.loss) == pytest.approx(expected, rel=1e-5)
    adversary = _latent_adversary()
    fv = _terms(LossConfig(objective="factorvae", tc_weight=4.0, beta=2.0), model,
                discriminator=adversary.discriminator)  # fmt: skip
    assert fv.real is not None and fv.fake is not None
    with torch.no_grad():
        d_tc = float(adversary.discriminator(fv.real).mean())
    assert _f(fv.extra[0]) == pytest.approx(d_tc, rel=1e-5)
    assert _f(fv.loss) == pytest.approx(_f(fv.recon) + 2 * _f(fv.kl) + 4 * d_tc, rel=1e-5)


def test_the_mmd_draws_its_prior_samples_from_the_models_prior(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = _model()
    drawn = []

    def far_prior(n: int, generator: Any = None) -> torch.Tensor:
        drawn.append(n)
        return torch.full((n, 3), 50.0)

    base = _terms(LossConfig(objective="wae_mmd"), model)
    monkeypatch.setattr(model, "sample_prior", far_prior)
    far = _terms(LossConfig(objective="wae_mmd"), model)
    assert drawn == [16] and _f(far.extra[0]) > _f(base.extra[0]) + 0.5


def test_the_deterministic_wae_encodes_to_the_mean() -> None:
    model = _model()
    cfg = LossConfig(objective="wae_mmd", wae_encoder="deterministic")
    x = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    a = _terms(cfg, model, seed=0)
    b = _terms(cfg, model, seed=5)  # another noise seed: the same z = mu, other prior draws
    assert _f(a.recon) == _f(b.recon) and _f(a.extra[0]) != _f(b.extra[0])
    with torch.no_grad():
        mu, _ = model.posterior(x)
        recon = -model.log_likelihood(x, model.decode(mu)).mean()
    assert _f(a.recon) == pytest.approx(float(recon), rel=1e-6)
    stochastic = _terms(LossConfig(objective="wae_mmd"), model, seed=0)
    assert _f(stochastic.recon) != _f(a.recon)


def test_the_elbo_step_does_none_of_their_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the ELBO's step called another objective's code")

    for name in ("latent_loss", "prior_draws", "permute_dims"):
        monkeypatch.setattr(latent_objectives, name, forbidden)
    for name in ("tc_decomposition", "mmd"):
        monkeypatch.setattr(divergences, name, forbidden)
    run = vaekit.train(tiny_config(tmp_path / "run"))
    record = _records(run)[-1]
    theirs = {"train_mi", "train_tc", "train_dim_kl", "train_mmd", "train_disc_loss"}
    assert not theirs & set(record)
    assert "adversary" not in checkpoint.load_state(run / checkpoint.STATE_FILE)


# -- through the CLI --------------------------------------------------------------------------
@pytest.mark.parametrize("name", OBJECTIVES)
def test_each_objective_trains_evaluates_and_reports_through_the_cli(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run = tmp_path / "run"
    flags = ["--data", "noise", "--data.noise_examples", "256", "--model.hidden", "32"]
    flags += ["--latent-dim", "4", "--epochs", "2", "--batch-size", "64"]
    flags += ["--train.progress", "false", "--loss.objective", name, "--out", str(run)]
    flags += ["--loss.factorvae_hidden", "16"] if name == "factorvae" else []
    assert main(["train", *flags]) == 0
    records = _records(run)
    for column in latent_objectives.COLUMNS[name]:
        assert all(math.isfinite(r[f"train_{column}"]) for r in records), column
    if name == "factorvae":
        assert all(math.isfinite(r["train_disc_loss"]) for r in records)
    capsys.readouterr()
    assert main(["evaluate", str(run), "--json", "--iw-samples", "4"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert math.isfinite(stats["nelbo"]) and math.isfinite(stats["log_px"])
    assert main(["report", str(run), "--iw-samples", "2", "--max-test", "16"]) == 0
    page = (run / "report.html").read_text()
    for column in latent_objectives.COLUMNS[name]:
        assert f"train {column.replace('_', ' ')}" in page, column
    assert vaekit.load(run).latent_dim == 4


def test_evaluate_disentanglement_scores_a_tcvae_run_on_the_factor_set(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    spec = importlib.util.spec_from_file_location("make_shapes", ROOT / "scripts/make_shapes.py")
    make = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(make)  # type: ignore[union-attr]
    folder = tmp_path / "factors"
    make.main([str(folder), "--n", "120", "--size", "16", "--seed", "0", "--factors"])
    run = tmp_path / "run"
    argv = ["train", "--data", str(folder), "--data.image_size", "16", "--model.hidden", "32"]
    argv += ["--latent-dim", "4", "--epochs", "2", "--batch-size", "32", "--out", str(run)]
    argv += ["--train.progress", "false", "--loss.objective", "tcvae", "--loss.tc_weight", "6"]
    assert main(argv) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run), "--data", str(folder), "--disentanglement", "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)["disentanglement"]
    assert scores["images"] == 120
    for key in ("mig", "dci_disentanglement", "dci_completeness", "dci_informativeness"):
        assert 0.0 <= scores[key] <= 1.0, key


# -- what they refuse -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "options, needle",
    [
        ({"loss.objective": "tcvae", "loss.beta": 4.0}, "'loss.beta' 4.0 does not apply"),
        ({"loss.objective": "wae_mmd", "loss.free_bits": 0.5}, "no per-dimension KL"),
        ({"loss.objective": "infovae", "loss.free_bits": 0.5}, "no per-dimension KL"),
        ({"loss.objective": "factorvae", "loss.iw_samples": 4}, "leave loss.iw_samples at 1"),
        ({"loss.objective": "wae_mmd", "loss.kl_warmup_steps": 9}, "no KL term to warm up"),
        ({"loss.objective": "factorvae", "loss.adversarial_weight": 0.5}, "one discriminator"),
    ],
)
def test_options_an_objective_cannot_take_are_refused_at_load(
    options: dict[str, Any], needle: str
) -> None:
    with pytest.raises(ConfigError, match=needle) as e:
        load_config(None, options)
    assert "\n" not in str(e.value)


def test_what_the_model_or_run_cannot_give_is_refused_in_one_line(tmp_path: Path) -> None:
    vq = tiny_config(tmp_path / "vq", **{"loss.objective": "tcvae", "model.posterior": "vq"})
    with pytest.raises(ConfigError, match="needs a posterior with a density; a model.posterior vq"):
        vaekit.train(vq)
    model = _model()
    with pytest.raises(ConfigError, match="torchrun shards it: train it in one process"):
        latent_objectives.check(model, LossConfig(objective="wae_mmd"), processes=2)
    model.prior = "vamp"  # type: ignore[assignment]  # as a VampPrior model names its prior
    with pytest.raises(ConfigError, match="needs the N\\(0, I\\) prior.*model.prior is vamp"):
        latent_objectives.check(model, LossConfig(objective="tcvae"), processes=1)
    latent_objectives.check(model, LossConfig(objective="infovae"), processes=1)  # composes
    assert Config().loss.objective == "elbo"


def test_the_model_card_names_the_objective_instead_of_beta() -> None:
    from vaekit.io import card

    model = _model()
    for name, said in (("elbo", "; beta 1"), ("tcvae", "; objective tcvae")):
        config = load_config(None, {"loss.objective": name})
        arch = model.architecture()
        text = card.model_card("a/b", architecture=arch, parameters=1, config=config)
        assert said in text and ("; beta" in text) == (name == "elbo"), text
