"""The "visurf" policy loss (docs/METHOD.md §1.5), its GT-row variants, and the full actor loss."""

import math

import numpy as np
import pytest
import torch
from torch import nn
from verl.trainer.ppo.core_algos import compute_policy_loss_vanilla
from verl.utils import tensordict_utils as tu
from verl.utils.metric import Metric
from verl.workers.config import ActorConfig
from verl.workers.utils.losses import ppo_loss
from verl.workers.utils.padding import no_padding_2_padding

from verl_ext.visurf.advantage import compute_visurf_outcome_advantage
from verl_ext.visurf.policy_loss import compute_policy_loss_visurf, visurf_actor_loss, visurf_policy_loss_terms

AGG_MODES = ["token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm"]


def _actor_config(**overrides):
    kwargs = dict(
        strategy="fsdp", rollout_n=4, ppo_micro_batch_size_per_gpu=2, clip_ratio_low=0.2, clip_ratio_high=0.28
    )
    return ActorConfig(**{**kwargs, **overrides})


def _random_batch(bs=6, length=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    old_log_prob = -torch.rand(bs, length, generator=g) * 2
    log_prob = old_log_prob + torch.randn(bs, length, generator=g) * 0.5  # ratios well outside the clip range
    advantages = torch.randn(bs, 1, generator=g).expand(bs, length).contiguous()
    lengths = torch.randint(1, length + 1, (bs,), generator=g)
    response_mask = torch.arange(length)[None, :] < lengths[:, None]
    return old_log_prob, log_prob, advantages, response_mask


# --------------------------------------------------------------------------------------------
# the registered loss == verl's vanilla clipped surrogate
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("agg", AGG_MODES)
@pytest.mark.parametrize("with_is_weights", [False, True])
def test_registered_loss_equals_verl_vanilla(agg, with_is_weights):
    old, new, adv, mask = _random_batch()
    weights = torch.rand(mask.shape, generator=torch.Generator().manual_seed(3)) if with_is_weights else None
    kwargs = dict(
        old_log_prob=old,
        log_prob=new,
        advantages=adv,
        response_mask=mask,
        loss_agg_mode=agg,
        rollout_is_weights=weights,
    )
    ours, ours_metrics = compute_policy_loss_visurf(**kwargs, config=_actor_config(loss_agg_mode=agg))
    theirs, their_metrics = compute_policy_loss_vanilla(**kwargs, config=_actor_config(loss_agg_mode=agg))
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    assert ours_metrics == their_metrics
    assert 0 < ours_metrics["actor/pg_clipfrac"] < 1  # the batch exercises the clip


def test_clipped_surrogate_hand_computed():
    # one token per row, ε_low = 0.2, ε_high = 0.28, dual clip c = 3
    ratio = torch.tensor([[1.5], [0.5], [5.0], [1.1]])
    adv = torch.tensor([[1.0], [1.0], [-1.0], [-2.0]])
    old = torch.zeros(4, 1)
    mask = torch.ones(4, 1, dtype=torch.bool)
    # row 0: min(1.5, 1.28)·1 -> -1.28; row 1: -min(0.5, 0.8) -> -0.5; row 2: dual clip -> 3;
    # row 3: -min(1.1·-2, 1.1·-2) -> 2.2
    expected = torch.tensor([-1.28, -0.5, 3.0, 2.2])
    for i in range(4):
        loss, metrics = visurf_policy_loss_terms(
            old[i : i + 1], ratio[i : i + 1].log(), adv[i : i + 1], mask[i : i + 1], clip_ratio_high=0.28
        )
        torch.testing.assert_close(loss, expected[i])
    loss, metrics = visurf_policy_loss_terms(
        old, ratio.log(), adv, mask, clip_ratio_high=0.28, loss_agg_mode="token-mean"
    )
    torch.testing.assert_close(loss, expected.mean())
    torch.testing.assert_close(metrics["actor/pg_clipfrac"], torch.tensor(0.25))  # row 0 (row 2 is dual-clipped)
    torch.testing.assert_close(metrics["actor/pg_clipfrac_lower"], torch.tensor(0.25))  # row 2


def test_gt_variants_hand_computed():
    # row 0: rollout, ratio 1.5, Â = 1 -> clipped -1.2; row 1: GT, π = 0.5, π_old = 0.1 (ratio 5), Â = 2
    old = torch.tensor([[0.0], [math.log(0.1)]])
    new = torch.tensor([[math.log(1.5)], [math.log(0.5)]])
    adv = torch.tensor([[1.0], [2.0]])
    mask = torch.ones(2, 1)
    is_gt = torch.tensor([False, True])
    cases = {
        "ppo_clip": [-1.2, -2.0 * 1.2],  # the GT is an ordinary member: clipped too
        "luffy_shaping": [-1.2, -2.0 * 0.5 / (0.5 + 0.1)],  # f(π) = π/(π+γ), no clip
        "sft": [-1.2, -2.0 * math.log(0.5)],  # −Â log π
    }
    for gt_loss, rows in cases.items():
        loss, metrics = visurf_policy_loss_terms(
            old, new, adv, mask, is_gt=is_gt, gt_loss=gt_loss, loss_agg_mode="token-sum"
        )
        torch.testing.assert_close(loss, torch.tensor(sum(rows)), msg=gt_loss)
        # clip fraction over the clipped-surrogate tokens: both rows under ppo_clip, the rollout otherwise
        assert metrics["actor/pg_clipfrac"].item() == pytest.approx(1.0)
    # without is_gt every variant is the clipped surrogate
    plain, _ = visurf_policy_loss_terms(old, new, adv, mask, gt_loss="sft", loss_agg_mode="token-sum")
    torch.testing.assert_close(plain, torch.tensor(sum(cases["ppo_clip"])))


def test_gt_variant_clip_metrics_cover_rollout_rows_only():
    old = torch.zeros(2, 2)
    new = torch.tensor([[0.0, 0.0], [2.0, 2.0]])  # GT row far off-policy
    adv = torch.ones(2, 2)
    mask = torch.ones(2, 2)
    _, m_clip = visurf_policy_loss_terms(old, new, adv, mask, is_gt=torch.tensor([False, True]))
    _, m_sft = visurf_policy_loss_terms(old, new, adv, mask, is_gt=torch.tensor([False, True]), gt_loss="sft")
    assert m_clip["actor/pg_clipfrac"].item() == pytest.approx(0.5)
    assert m_sft["actor/pg_clipfrac"].item() == pytest.approx(0.0)
    assert m_clip["actor/ppo_kl"] == m_sft["actor/ppo_kl"]


def test_rollout_is_weights_apply_to_clipped_rows():
    old, new, adv, mask = torch.zeros(2, 1), torch.zeros(2, 1), torch.tensor([[1.0], [1.0]]), torch.ones(2, 1)
    weights = torch.tensor([[0.5], [0.25]])
    is_gt = torch.tensor([False, True])
    clip, _ = visurf_policy_loss_terms(
        old, new, adv, mask, is_gt=is_gt, rollout_is_weights=weights, loss_agg_mode="token-sum"
    )
    sft, _ = visurf_policy_loss_terms(
        old, new, adv, mask, is_gt=is_gt, gt_loss="sft", rollout_is_weights=weights, loss_agg_mode="token-sum"
    )
    torch.testing.assert_close(clip, torch.tensor(-0.75))  # verl semantics: every row weighted
    torch.testing.assert_close(sft, torch.tensor(-0.5 - 0.0))  # GT row: −Â log π = 0, unweighted


def test_bad_variant_arguments_raise():
    old, new, adv, mask = _random_batch()
    with pytest.raises(ValueError, match="gt_loss must be one of"):
        visurf_policy_loss_terms(old, new, adv, mask, gt_loss="dpo")
    with pytest.raises(ValueError, match="luffy_gamma must be > 0"):
        visurf_policy_loss_terms(old, new, adv, mask, gt_loss="luffy_shaping", luffy_gamma=0.0)
    with pytest.raises(ValueError, match="clip_ratio_c"):
        visurf_policy_loss_terms(old, new, adv, mask, clip_ratio_c=1.0)


# --------------------------------------------------------------------------------------------
# the paper's derivation: ∇L = RLVR term over rollouts + advantage-weighted SFT term on the GT
# --------------------------------------------------------------------------------------------
class TinyLM(nn.Module):
    """A bigram LM: log π(token_t | token_{t-1})."""

    def __init__(self, vocab=13, dim=8):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.head = nn.Linear(dim, vocab)

    def forward(self, sequences):  # (bs, 1 + T) -> token log-probs of the response (bs, T)
        logits = self.head(torch.tanh(self.embed(sequences[:, :-1])))
        return torch.log_softmax(logits, dim=-1).gather(-1, sequences[:, 1:, None]).squeeze(-1)


def _grads(model, scalar):
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(scalar, list(model.parameters()), retain_graph=True)])


def _augmented_group():
    """G = 3 rollouts + the GT y' (last row), prompt token 0, ragged responses."""
    torch.manual_seed(0)
    model = TinyLM().double()
    sequences = torch.tensor([[0, 3, 5, 7, 2, 9], [0, 4, 4, 1, 0, 0], [0, 8, 6, 0, 0, 0], [0, 11, 12, 10, 6, 2]])
    response_mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    rewards = torch.zeros(4, 5, dtype=torch.float64)
    rewards[:, 0] = torch.tensor([0.0, 1.0, 0.5, 3.0])  # rollouts mostly fail, the GT scores 3
    adv, _ = compute_visurf_outcome_advantage(rewards, response_mask, np.array(["u"] * 4))
    return model, sequences, response_mask, adv, torch.tensor([False, False, False, True])


def _decomposition(model, sequences, mask, adv, gt_token_weight=None):
    """g_RLVR + g_SFT, from per-sequence ∇ log π, independent of the loss code."""
    log_prob = model(sequences)
    seq_log_prob = (log_prob * mask).sum(-1)
    n = len(sequences)  # G + 1
    rlvr = sum(adv[j, 0] / n * _grads(model, seq_log_prob[j]) for j in range(n - 1))
    if gt_token_weight is None:  # Â_gt/(G+1) · ∇ log π(y')
        sft = adv[-1, 0] / n * _grads(model, seq_log_prob[-1])
    else:  # per-token weights on ∇ log π(y'_t)
        sft = adv[-1, 0] / n * _grads(model, (gt_token_weight(log_prob[-1].detach()) * log_prob[-1] * mask[-1]).sum())
    return rlvr, sft


@pytest.mark.parametrize("gt_loss", ["ppo_clip", "sft"])
def test_gradient_decomposes_into_rlvr_plus_sft(gt_loss):
    model, sequences, mask, adv, is_gt = _augmented_group()
    log_prob = model(sequences)
    loss, _ = visurf_policy_loss_terms(
        log_prob.detach(), log_prob, adv, mask, is_gt=is_gt, gt_loss=gt_loss, loss_agg_mode="seq-mean-token-sum"
    )  # ratio = 1: π_old = π_θ at the first update
    grad = _grads(model, loss)
    rlvr, sft = _decomposition(model, sequences, mask, adv)
    assert adv[-1, 0] > 1.0 and sft.norm() > 0.1 * rlvr.norm()  # the SFT term is a real part of the update
    torch.testing.assert_close(-grad, rlvr + sft, atol=1e-5, rtol=0)


def test_registered_loss_gradient_decomposes():
    model, sequences, mask, adv, _ = _augmented_group()
    log_prob = model(sequences)
    config = _actor_config(loss_agg_mode="seq-mean-token-sum")
    loss, _ = compute_policy_loss_visurf(log_prob.detach(), log_prob, adv, mask, "seq-mean-token-sum", config)
    rlvr, sft = _decomposition(model, sequences, mask, adv)
    torch.testing.assert_close(-_grads(model, loss), rlvr + sft, atol=1e-5, rtol=0)


def test_luffy_gradient_is_shaped_sft_term():
    # ∇(−Â f(π)) = −Â γπ/(π+γ)² ∇ log π per GT token
    gamma = 0.1
    model, sequences, mask, adv, is_gt = _augmented_group()
    log_prob = model(sequences)
    loss, _ = visurf_policy_loss_terms(
        log_prob.detach(),
        log_prob,
        adv,
        mask,
        is_gt=is_gt,
        gt_loss="luffy_shaping",
        luffy_gamma=gamma,
        loss_agg_mode="seq-mean-token-sum",
    )
    shaping = lambda lp: gamma * lp.exp() / (lp.exp() + gamma) ** 2  # noqa: E731
    rlvr, sft = _decomposition(model, sequences, mask, adv, gt_token_weight=shaping)
    torch.testing.assert_close(-_grads(model, loss), rlvr + sft, atol=1e-5, rtol=0)


def test_smoothed_gt_leaves_pure_rlvr():
    # a rollout already matches the GT -> smoothing makes Â_gt = 0 -> the GT adds no gradient
    from verl_ext.visurf.group_step import group_reward_step

    model, sequences, mask, _, is_gt = _augmented_group()
    index = np.array(["u"] * 4)
    scores, _ = group_reward_step(torch.tensor([0.0, 3.0, 0.5, 3.0], dtype=torch.float64), index, is_gt,
                                  smoothing=True, inject_when="always")
    rewards = torch.zeros(4, 5, dtype=torch.float64)
    rewards[:, 0] = scores
    adv, _ = compute_visurf_outcome_advantage(rewards, mask, index)
    log_prob = model(sequences)
    loss, _ = visurf_policy_loss_terms(
        log_prob.detach(), log_prob, adv, mask, is_gt=is_gt, loss_agg_mode="seq-mean-token-sum"
    )
    rlvr, sft = _decomposition(model, sequences, mask, adv)
    assert sft.abs().max() < 1e-12
    torch.testing.assert_close(-_grads(model, loss), rlvr, atol=1e-5, rtol=0)


# --------------------------------------------------------------------------------------------
# visurf_actor_loss: the full actor loss installed with set_loss_fn
# --------------------------------------------------------------------------------------------
PROMPT_LEN, RESP_LEN, BS = 2, 4, 4
GT_ROWS = [False, True, False, True]


def _micro_batch(is_gt=None, is_gt_form="list", seed=0):
    """A padded micro-batch as verl's engine hands it to the loss, and the model output.

    `is_gt_form`: how the column arrives: "list" (tensordict non-tensor stack of bools, what
    verl sends), "tensor", "numpy" (non-tensor data holding an array); None: no column.
    """
    g = torch.Generator().manual_seed(seed)
    resp_lens = torch.tensor([4, 2, 3, 1])
    response_mask = (torch.arange(RESP_LEN)[None, :] < resp_lens[:, None]).long()
    old = -torch.rand(BS, RESP_LEN, generator=g) * response_mask
    log_prob = (old + torch.randn(BS, RESP_LEN, generator=g) * 0.3) * response_mask
    entropy = torch.rand(BS, RESP_LEN, generator=g)
    tensors = {
        "prompts": torch.ones(BS, PROMPT_LEN, dtype=torch.long),
        "responses": torch.ones(BS, RESP_LEN, dtype=torch.long),
        "attention_mask": torch.cat([torch.ones(BS, PROMPT_LEN, dtype=torch.long), response_mask], dim=1),
        "response_mask": response_mask,
        "old_log_probs": old,
        "advantages": torch.randn(BS, 1, generator=g).expand(BS, RESP_LEN).contiguous(),
        "ref_log_prob": old + 0.1,
    }
    non_tensors = {"dp_size": 1, "batch_num_tokens": int(response_mask.sum()), "global_batch_size": BS}
    if is_gt is not None:
        if is_gt_form == "list":
            tensors["is_gt"] = list(is_gt)
        elif is_gt_form == "tensor":
            tensors["is_gt"] = torch.tensor(is_gt)
        else:
            non_tensors["is_gt"] = np.array(is_gt)
    data = tu.get_tensordict(tensors, non_tensor_dict=non_tensors)

    def flat(values):  # unpadded model output, left-shifted by one token (no_padding_2_padding's layout)
        rows = [torch.cat([torch.zeros(PROMPT_LEN - 1), values[i, : resp_lens[i]], torch.zeros(1)]) for i in range(BS)]
        return torch.cat(rows)

    return data, {"log_probs": flat(log_prob), "entropy": flat(entropy)}, log_prob


def _metric_values(metrics):
    return {k: (v.values, v.aggregation) if isinstance(v, Metric) else v for k, v in metrics.items()}


CONFIG_VARIANTS = [dict(), dict(use_kl_loss=True, entropy_coeff=0.01, loss_agg_mode="seq-mean-token-sum")]


@pytest.mark.parametrize("overrides", CONFIG_VARIANTS)
@pytest.mark.parametrize(("gt_loss", "is_gt"), [("ppo_clip", [False] * BS), ("sft", None),
                                                ("luffy_shaping", [False] * BS)])
def test_actor_loss_is_verl_ppo_loss_without_gt_variant(overrides, gt_loss, is_gt):
    """The MIRRORED verl 0.9.1 code (visurf_actor_loss vs verl.workers.utils.losses.ppo_loss): on GT-free
    batches — no is_gt column, or a column with no GT row, which runs the mirrored path — loss and
    every metric equal verl's. Fails when a verl upgrade changes ppo_loss."""
    data, model_output, _ = _micro_batch(is_gt)
    ours, ours_metrics = visurf_actor_loss(_actor_config(**overrides), model_output, data, gt_loss=gt_loss)
    theirs, their_metrics = ppo_loss(_actor_config(**overrides), model_output, data)
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-7)
    ours_metrics, their_metrics = _metric_values(ours_metrics), _metric_values(their_metrics)
    assert ours_metrics.keys() == their_metrics.keys()
    for key, value in ours_metrics.items():
        if isinstance(value, tuple):
            assert value[1] == their_metrics[key][1]
            np.testing.assert_allclose(value[0], their_metrics[key][0], rtol=1e-6, atol=1e-7)
        else:
            assert value == their_metrics[key]


@pytest.mark.parametrize("overrides", CONFIG_VARIANTS)
@pytest.mark.parametrize("is_gt_form", ["list", "tensor", "numpy"])
def test_actor_loss_gt_variant(overrides, is_gt_form):
    data, model_output, log_prob = _micro_batch(GT_ROWS, is_gt_form)
    config = _actor_config(**overrides)
    loss, metrics = visurf_actor_loss(config, model_output, data, gt_loss="sft")
    verl_loss, verl_metrics = ppo_loss(_actor_config(**overrides), model_output, data)
    assert metrics.keys() == verl_metrics.keys()

    terms = dict(
        old_log_prob=data["old_log_probs"],
        log_prob=log_prob,
        advantages=data["advantages"],
        response_mask=data["response_mask"].bool(),
        clip_ratio_high=0.28,
        loss_agg_mode=config.loss_agg_mode,
        global_batch_info=config.global_batch_info,
    )
    expected_pg, _ = visurf_policy_loss_terms(**terms, is_gt=torch.tensor(GT_ROWS), gt_loss="sft")
    assert metrics["actor/pg_loss"].values == pytest.approx([expected_pg.item()])
    # everything but the policy term is verl's: the loss differs from ppo_loss by the pg difference only
    verl_pg = verl_metrics["actor/pg_loss"].values[0]
    assert abs(expected_pg.item() - verl_pg) > 1e-3, "the GT rows must change the loss"
    if "kl_loss" not in verl_metrics:
        torch.testing.assert_close(loss - verl_loss, expected_pg - verl_pg, rtol=1e-5, atol=1e-6)
    for key in ("actor/entropy_loss", "kl_coef"):
        if key in verl_metrics:
            assert _metric_values(metrics)[key] == _metric_values(verl_metrics)[key]
    if "kl_loss" in verl_metrics:  # the KL term skips GT rows (KL_ON_GT_ROWS = False)
        torch.testing.assert_close(loss - verl_loss, expected_pg - verl_pg + config.kl_loss_coef * (
            metrics["kl_loss"].values[0] - verl_metrics["kl_loss"].values[0]), rtol=1e-5, atol=1e-6)


def test_actor_loss_rejects_other_loss_modes_and_bad_arguments():
    data, model_output, _ = _micro_batch(GT_ROWS)
    config = _actor_config(policy_loss={"loss_mode": "gspo"})
    with pytest.raises(ValueError, match="cannot be combined with policy_loss.loss_mode='gspo'"):
        visurf_actor_loss(config, model_output, data, gt_loss="luffy_shaping")
    with pytest.raises(ValueError, match="gt_loss must be one of"):
        visurf_actor_loss(_actor_config(), model_output, data, gt_loss="nope")
    short, _, _ = _micro_batch(GT_ROWS[:3], "numpy")
    with pytest.raises(ValueError, match="is_gt has 3 entries for a micro-batch of 4 rows"):
        visurf_actor_loss(_actor_config(), model_output, short, gt_loss="sft")


# --------------------------------------------------------------------------------------------
# rows that train nothing: pad rows and all_fail-inactive GTs; KL skips GT rows (issue 20, item 4)
# --------------------------------------------------------------------------------------------
# rows: 0 rollout, 1 active GT, 2 pad row, 3 GT switched off by inject_when=all_fail
FROZEN_COLUMNS = {"is_gt": [False, True, False, True], "visurf_is_pad": [False, False, True, False],
                  "visurf_gt_active": [False, True, False, False]}
LOSS_TERMS = dict(entropy_coeff=0.01, use_kl_loss=True, kl_loss_coef=0.1, kl_loss_type="low_var_kl")


def _frozen_batch(seed=0, advantages=None):
    """`_micro_batch` with the pad / active columns as verl's engine delivers them (non-tensor stacks);
    the model output's log-probs and entropies are leaves, so their gradients can be read per row."""
    data, model_output, log_prob = _micro_batch(FROZEN_COLUMNS["is_gt"], seed=seed)
    for key in ("visurf_is_pad", "visurf_gt_active"):
        data[key] = list(FROZEN_COLUMNS[key])
    if advantages is not None:
        data["advantages"] = torch.tensor(advantages, dtype=torch.float32)[:, None].expand(BS, RESP_LEN).contiguous()
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in model_output.items()}
    return data, leaves


def _row_grads(flat_grad):
    """The flat (unpadded, shifted) gradient back per row: (bs,) sum of |grad| over the row's tokens."""
    lens = [4, 2, 3, 1]
    out, start = [], 0
    for n in lens:
        out.append(float(flat_grad[start: start + PROMPT_LEN + n].abs().sum()))
        start += PROMPT_LEN + n
    return out


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-sum"])
@pytest.mark.parametrize("gt_loss", ["ppo_clip", "sft"])
def test_pad_and_switched_off_rows_get_exactly_no_gradient(agg, gt_loss):
    """Pad row (2) and switched-off GT (3): Â = 0, yet verl's ppo_loss moves them through the entropy and
    KL terms; visurf_actor_loss gives both exactly zero gradient in every term, and the GT's (1)
    log-probs get no KL gradient (the loss with and without KL has the same GT-row gradient)."""
    advantages = [0.7, 1.3, 0.0, 0.0]  # as the trainer leaves them: frozen rows are one-member groups
    data, out = _frozen_batch(advantages=advantages)
    loss, _ = visurf_actor_loss(_actor_config(loss_agg_mode=agg, **LOSS_TERMS), out, data, gt_loss=gt_loss)
    loss.backward()
    lp, ent = _row_grads(out["log_probs"].grad), _row_grads(out["entropy"].grad)
    assert lp[2] == lp[3] == 0.0 and ent[2] == ent[3] == 0.0
    assert lp[0] > 0 and lp[1] > 0 and ent[0] > 0 and ent[1] > 0

    verl_data, verl_out = _frozen_batch(advantages=advantages)  # verl's loss on the same rows: they move
    verl_loss, _ = ppo_loss(_actor_config(loss_agg_mode=agg, **LOSS_TERMS), verl_out, verl_data)
    verl_loss.backward()
    assert _row_grads(verl_out["log_probs"].grad)[2] > 0 and _row_grads(verl_out["entropy"].grad)[2] > 0

    no_kl_data, no_kl_out = _frozen_batch(advantages=advantages)  # KL on/off: same gradient on the GT row
    no_kl, _ = visurf_actor_loss(_actor_config(loss_agg_mode=agg, **{**LOSS_TERMS, "use_kl_loss": False}),
                                 no_kl_out, no_kl_data, gt_loss=gt_loss)
    no_kl.backward()
    assert _row_grads(no_kl_out["log_probs"].grad)[1] == pytest.approx(lp[1], rel=1e-6)
    assert _row_grads(no_kl_out["log_probs"].grad)[0] != pytest.approx(lp[0], rel=1e-6)  # rollouts keep KL


@pytest.mark.parametrize("agg", AGG_MODES)
def test_frozen_rows_keep_the_normalisation(agg):
    """The masked rows still count in the denominators (verl's batch_num_tokens / global_batch_size, or
    — without them — the whole response_mask): the loss equals verl's ppo_loss on the same batch with
    the frozen rows neutralised (entropy 0, π_ref = π, Â = 0) and the GT row's π_ref = π."""
    advantages = [0.7, 1.3, 0.0, 0.0]
    config = _actor_config(loss_agg_mode=agg, **LOSS_TERMS)
    for dp_info in (True, False):
        data, out = _frozen_batch(advantages=advantages)
        if not dp_info:
            data = tu.get_tensordict({k: data[k] for k in data.keys() if k not in ("dp_size", "batch_num_tokens",
                                                                                     "global_batch_size")},
                                     non_tensor_dict={"dp_size": 1, "batch_num_tokens": None,
                                                      "global_batch_size": None})
        ours, _ = visurf_actor_loss(config, {k: v.detach() for k, v in out.items()}, data)
        ref_data, ref_out = _frozen_batch(advantages=advantages)
        if not dp_info:
            ref_data = data
        log_prob = no_padding_2_padding(ref_out["log_probs"].detach(), ref_data)
        ref = data["ref_log_prob"].clone()
        ref[1:] = log_prob[1:]  # rows 1-3: KL term 0
        entropy = no_padding_2_padding(ref_out["entropy"].detach(), ref_data)
        neutral = ref_out["entropy"].detach().clone()
        offsets = np.cumsum([0] + [PROMPT_LEN + n for n in [4, 2, 3, 1]])
        neutral[offsets[2]: offsets[4]] = 0.0  # rows 2 and 3: entropy 0
        verl_batch = tu.get_tensordict({**{k: data[k] for k in ("prompts", "responses", "attention_mask",
                                                                 "response_mask", "old_log_probs", "advantages")},
                                        "ref_log_prob": ref},
                                       non_tensor_dict={k: data[k] for k in ("dp_size", "batch_num_tokens",
                                                                             "global_batch_size")})
        theirs, _ = ppo_loss(_actor_config(loss_agg_mode=agg, **LOSS_TERMS),
                             {"log_probs": ref_out["log_probs"].detach(), "entropy": neutral}, verl_batch)
        assert entropy.shape == log_prob.shape
        torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-7)


# --------------------------------------------------------------------------------------------
# the step size against GRPO (README "Effective step size against GRPO"; issue 20 item 10)
# --------------------------------------------------------------------------------------------
def _rollout_grad(n_rows, global_batch_size, agg, batch_num_tokens=None, extra_rows=0, extra_len=1):
    """Gradient of the ViSurf clipped surrogate on the first 4 rows (the same G = 4 rollouts in every
    call) with ``extra_rows`` more rows of Â = 0 (a smoothed GT / pad rows) of ``extra_len`` tokens."""
    g = torch.Generator().manual_seed(0)
    length = 6
    old = -torch.rand(4, length, generator=g)
    adv = torch.tensor([1.0, -0.5, 0.25, -0.75])[:, None].expand(4, length)
    mask = torch.ones(4, length, dtype=torch.bool)
    if extra_rows:
        old = torch.cat([old, -torch.ones(extra_rows, length)])
        adv = torch.cat([adv, torch.zeros(extra_rows, length)])
        extra = torch.zeros(extra_rows, length, dtype=torch.bool)
        extra[:, :extra_len] = True
        mask = torch.cat([mask, extra])
    assert len(old) == n_rows
    log_prob = old.clone().requires_grad_(True)
    config = _actor_config(loss_agg_mode=agg)
    config.global_batch_info.update(dp_size=1, global_batch_size=global_batch_size, batch_num_tokens=batch_num_tokens)
    loss, _ = compute_policy_loss_visurf(old, log_prob, adv, mask, loss_agg_mode=agg, config=config)
    loss.backward()
    return log_prob.grad[:4]


@pytest.mark.parametrize("agg", ["seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
def test_seq_mean_scales_every_rollout_by_g_over_g_plus_1_against_grpo(agg):
    """verl normalises seq-mean modes by global_batch_size = ppo_mini_batch_size x n (ray_trainer
    _update_actor); ViSurf runs n = G+1, so each rollout's gradient is G/(G+1) of GRPO's at the same
    lr (4/5 here, 8/9 at the paper's G = 8) — the paper's 1/(G+1) normalisation, kept."""
    G, B = 4, 1
    grpo = _rollout_grad(G, B * G, agg)
    visurf = _rollout_grad(G + 1, B * (G + 1), agg, extra_rows=1, extra_len=6)
    torch.testing.assert_close(visurf, grpo * G / (G + 1), rtol=1e-6, atol=0)


def test_token_mean_pad_rows_shift_the_scale_by_t_over_t_plus_pads():
    """token-mean divides by the mini-batch's response tokens (batch_num_tokens), pad rows' EOS
    included: T rollout tokens and P one-token pad rows scale every rollout by T / (T + P)."""
    T = 4 * 6
    grpo = _rollout_grad(4, None, "token-mean", batch_num_tokens=T)
    padded = _rollout_grad(6, None, "token-mean", batch_num_tokens=T + 2, extra_rows=2, extra_len=1)
    torch.testing.assert_close(padded, grpo * T / (T + 2), rtol=1e-6, atol=0)
