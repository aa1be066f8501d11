"""The GT-construction seam (``verl_ext.visurf.gt_styles``): styles ``template`` / ``rollout_think``,
``gt_loss_tokens``, the rewritten rows' tensors, and the GT's advantage and loss on a hand-built group.

Token ids come from the tiny model's real byte-level BPE tokenizer (``verl_ext.tiny``), whose merges
include ``><`` — so ``</think><answer>`` has a token straddling the end of the think block, as in
Qwen's own tokenizer.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from verl_ext.visurf import columns as C
from verl_ext.visurf.config import VisurfConfig
from verl_ext.visurf.gt_styles import (
    GTRequest,
    build_gt_rows,
    compose_gt_response,
    gt_style_metrics,
    gt_style_names,
    response_position_ids,
    template_response,
    text_prefix_tokens,
)
from verl_ext.visurf.gt_styles.rollout_think import think_block_end
from verl_ext.visurf.reward_control import label_start

P, R = 4, 24  # prompt and response length of the hand-built batch
TEMPLATE = "<answer>{answer}</answer>"
LABEL_AT = label_start(TEMPLATE)  # 8


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def enc(tok, text: str, eos: bool = True) -> list[int]:
    return tok.encode(text, add_special_tokens=False) + ([tok.eos_token_id] if eos else [])


# group -> rows: (response text, reward, is_gt); GT rows hold the template GT the GT agent loop answers with
GROUPS = {
    "u1": [("<think>red circle</think>\n<answer>42</answer>", 1.0, False),
           ("<think>blue square left</think><answer>[]</answer>", 2.0, False),  # best with a think block
           ("<answer>7</answer>", 5.0, True)],
    "u2": [("<answer>5</answer>", 3.0, False),  # no think block anywhere: fallback to template
           ("<think> </think><answer>5</answer>", 3.0, False),  # blank think: not well formed
           ("<answer>9</answer>", 4.0, True)],
    "u3": [("<think>the</think> <answer>1</answer>", 2.0, False),  # tie with the next: the first wins
           ("<think>left</think><answer>1</answer>", 2.0, False),
           ("<answer>3</answer>", 4.0, True)],
}


def _positions(attn: torch.Tensor, rope_offset: int) -> torch.Tensor:
    """verl 0.9.1's (bs, 4, L) layout for text-only sequences: text channel arange over valid tokens
    (padding 1), rope channels the same minus an offset (as an image compresses them; padding 0)."""
    text = torch.where(attn.bool(), attn.cumsum(-1) - 1, torch.ones_like(attn))
    rope = torch.where(attn.bool(), attn.cumsum(-1) - 1 - rope_offset, torch.zeros_like(attn))
    return torch.stack([text, rope, rope, rope], dim=1)


def hand_batch(tok):
    """The GROUPS as a generated verl batch (left-padded prompts, right-padded responses, rm_scores
    at the last response token); rows shuffled so nothing depends on order."""
    from verl import DataProto

    rows = [(uid, *r) for uid, members in GROUPS.items() for r in members]
    order = [4, 0, 8, 2, 6, 1, 3, 7, 5]
    rows = [rows[i] for i in order]
    B = len(rows)
    prompts = torch.tensor([[0, 11, 12, 13] if uid != "u2" else [21, 22, 23, 24] for uid, *_ in rows])
    p_attn = torch.tensor([[0, 1, 1, 1] if uid != "u2" else [1, 1, 1, 1] for uid, *_ in rows])
    responses = torch.zeros(B, R, dtype=torch.long)
    r_attn = torch.zeros(B, R, dtype=torch.long)
    rm = torch.zeros(B, R)
    for i, (_, text, reward, _) in enumerate(rows):
        ids = enc(tok, text)
        responses[i, : len(ids)] = torch.tensor(ids)
        r_attn[i, : len(ids)] = 1
        rm[i, len(ids) - 1] = reward
    attn = torch.cat([p_attn, r_attn], dim=1)
    pos = _positions(attn, rope_offset=1)
    batch = DataProto.from_dict(
        tensors={"prompts": prompts, "responses": responses, "response_mask": r_attn.clone(),
                 "input_ids": torch.cat([prompts, responses], dim=1), "attention_mask": attn,
                 "position_ids": pos, "rm_scores": rm, "rollout_log_probs": torch.full((B, R), -0.5)},
        non_tensors={"uid": np.array([r[0] for r in rows], dtype=object),
                     C.IS_GT: np.array([r[3] for r in rows]),
                     C.GT_TEXT: np.array([r[1] if r[3] else "" for r in rows], dtype=object)},
    )
    return batch


def row_of(batch, uid: str, gt: bool) -> int:
    return int(np.nonzero((batch.non_tensor_batch["uid"] == uid) & (batch.non_tensor_batch[C.IS_GT] == gt))[0][0])


def rollout_rows(batch, uid: str) -> list[int]:
    return np.nonzero((batch.non_tensor_batch["uid"] == uid) & ~batch.non_tensor_batch[C.IS_GT])[0].tolist()


def build(batch, tok, style="rollout_think", loss_tokens="all"):
    return build_gt_rows(batch, batch.non_tensor_batch["uid"], batch.non_tensor_batch[C.GT_TEXT], style=style,
                         loss_tokens=loss_tokens, label_start=LABEL_AT, tokenizer=tok)


def valid_ids(batch, row: int) -> list[int]:
    n = int(batch.batch["attention_mask"][row, P:].sum())
    return batch.batch["responses"][row, :n].tolist()


# ------------------------------------------------------------------------------------------
def test_styles_are_the_package_modules_and_config_checks_them():
    assert gt_style_names() == ("rollout_think", "template")
    assert VisurfConfig().gt_style == "template" and VisurfConfig().gt_loss_tokens == "all"  # the paper's
    VisurfConfig(gt_style="rollout_think", gt_loss_tokens="answer")
    with pytest.raises(ValueError, match="gt_style"):
        VisurfConfig(gt_style="rollout")
    with pytest.raises(ValueError, match="gt_loss_tokens"):
        VisurfConfig(gt_loss_tokens="label")


@pytest.mark.parametrize("text, end", [
    ("<think>red circle</think>\n<answer>42</answer>", len("<think>red circle</think>\n")),
    ("  <think>a</think><answer>1</answer>", len("  <think>a</think>")),
    ("<think>a</think>", len("<think>a</think>")),  # a truncated rollout keeps its think block
    ("<answer>5</answer>", -1),
    ("<think> \n</think><answer>5</answer>", -1),  # blank reasoning
    ("<think>a <answer>1</answer></think><answer>1</answer>", -1),  # an answer inside the block
    ("x<think>a</think><answer>1</answer>", -1),  # not at the start
    ("<think>never closed <answer>1</answer>", -1),
])
def test_think_block_end(text, end):
    assert think_block_end(text) == end


def test_text_prefix_tokens_counts_only_tokens_wholly_before_the_boundary(tok):
    ids = enc(tok, "<think>blue square left</think><answer>[]</answer>", eos=False)
    pieces = [tok.decode([i]) for i in ids]
    assert pieces[:9] == ["<", "think", ">", "blue", " square", " left", "</", "think", "><"]
    end = len("<think>blue square left</think>")
    assert text_prefix_tokens(tok, ids, end) == 8  # "><" straddles the end of </think>
    assert text_prefix_tokens(tok, ids, end + 1) == 9
    assert text_prefix_tokens(tok, ids, 0) == 0
    assert text_prefix_tokens(tok, ids, 10**6) == len(ids)


def test_rollout_think_borrows_the_best_rollouts_think_ids(tok):
    batch = hand_batch(tok)
    before = {k: v.clone() for k, v in batch.batch.items()}
    changed = build(batch, tok)
    g1, g2, g3 = (row_of(batch, u, True) for u in ("u1", "u2", "u3"))
    # u1: rollout 2 (reward 2 > 1) has the best think block; its first 8 ids are wholly inside it
    # ("<think>blue square left</think"), the straddling "><" is re-tokenised with the GT answer
    best = enc(tok, GROUPS["u1"][1][0])
    expected = best[:8] + enc(tok, "><answer>7</answer>")
    assert valid_ids(batch, g1) == expected
    assert tok.decode(expected, skip_special_tokens=True) == "<think>blue square left</think><answer>7</answer>"
    # u3: both rollouts reward 2 -> the first; "</think> <answer>": " <" straddles, " " goes with the answer
    first = enc(tok, GROUPS["u3"][0][0])
    k3 = len(enc(tok, "<think>the</think>", eos=False))
    assert valid_ids(batch, g3) == first[:k3] + enc(tok, " <answer>3</answer>")
    # u2: no well-formed think block -> the template GT, unchanged
    assert valid_ids(batch, g2) == enc(tok, "<answer>9</answer>")
    assert sorted(changed.tolist()) == sorted([g1, g3])
    assert batch.non_tensor_batch[C.GT_FALLBACK].tolist() == [r == g2 for r in range(len(batch))]
    borrowed = batch.non_tensor_batch[C.GT_BORROWED]
    assert borrowed[g1] == 8 and borrowed[g3] == k3 and borrowed[g2] == 0
    assert borrowed.sum() == 8 + k3  # nothing on rollout rows
    # response_mask 0 exactly on the borrowed tokens; attention 1 on every response token
    for g, k, n in ((g1, 8, len(expected)), (g3, k3, len(valid_ids(batch, g3)))):
        assert batch.batch["response_mask"][g].tolist() == [0] * k + [1] * (n - k) + [0] * (R - n)
        assert batch.batch["attention_mask"][g, P:].tolist() == [1] * n + [0] * (R - n)
        assert batch.batch["input_ids"][g, P:].tolist() == batch.batch["responses"][g].tolist()
        assert batch.batch["rollout_log_probs"][g].tolist() == [0.0] * R  # placeholders, π_old later
    # rollout rows, prompts and the fallback GT row untouched
    untouched = [r for r in range(len(batch)) if r not in (g1, g3)]
    for key, old in before.items():
        assert torch.equal(batch.batch[key][untouched], old[untouched]), key
        if key in ("prompts",):
            assert torch.equal(batch.batch[key], old)
    assert torch.equal(batch.batch["attention_mask"][:, :P], before["attention_mask"][:, :P])


def test_rewritten_rows_have_verls_position_ids_and_pass_check_gt_rows(tok):
    from verl_ext.visurf.gt_injection import check_gt_rows

    batch = hand_batch(tok)
    build(batch, tok)
    # the positions the hand-built (verl) layout gives the new attention mask
    assert torch.equal(batch.batch["position_ids"], _positions(batch.batch["attention_mask"], rope_offset=1))
    assert check_gt_rows(batch) == 3


def test_response_position_ids_1d_follow_compute_position_id_with_mask():
    from verl.utils.model import compute_position_id_with_mask

    attn = torch.tensor([[0, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1, 0]])
    old = compute_position_id_with_mask(torch.tensor([[0, 1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1, 1]]))
    new = response_position_ids(old, 3, attn[:, 3:].bool())
    assert torch.equal(new, compute_position_id_with_mask(attn))


def test_gt_advantage_and_loss_train_only_the_answer_tokens(tok):
    """Â_gt and the GT row's loss (seq-mean-token-sum, ratio 1), by hand: group u1 rewards 1, 2 and
    the GT's 5 -> Â_gt = (5 - 8/3) / (std_unbiased + 1e-6); loss = -Â_gt x (trained tokens); the
    gradient is -Â_gt on each trained token and 0 on the borrowed ones."""
    from verl_ext.visurf.advantage import compute_visurf_outcome_advantage
    from verl_ext.visurf.group_step import set_outcome_scores
    from verl_ext.visurf.policy_loss import visurf_policy_loss_terms

    batch = hand_batch(tok)
    build(batch, tok)
    g1 = row_of(batch, "u1", True)
    rm = batch.batch["rm_scores"]
    rewards = rm.sum(-1)
    rewards[g1] = 5.0  # what the reward workers give the rewritten GT (rescored in the manager)
    set_outcome_scores(rm, batch.batch["attention_mask"][:, P:], rewards)
    adv, _ = compute_visurf_outcome_advantage(rm, batch.batch["response_mask"], batch.non_tensor_batch["uid"])
    mean, std = 8 / 3, float(np.std([1.0, 2.0, 5.0], ddof=1))
    a_gt = (5 - mean) / (std + 1e-6)
    mask = batch.batch["response_mask"][g1]
    assert adv[g1][mask.bool()].tolist() == pytest.approx([a_gt] * int(mask.sum()), rel=1e-6)
    assert adv[g1][:8].tolist() == [0.0] * 8  # borrowed tokens carry no advantage
    n_trained = len(enc(tok, "><answer>7</answer>"))
    assert int(mask.sum()) == n_trained
    old = torch.full((1, R), -1.3)
    logp = old.clone().requires_grad_(True)
    loss, _ = visurf_policy_loss_terms(old, logp, adv[g1: g1 + 1], mask[None], torch.tensor([True]),
                                       loss_agg_mode="seq-mean-token-sum")
    assert loss.item() == pytest.approx(-a_gt * n_trained, rel=1e-6)
    loss.backward()
    assert logp.grad[0, :8].tolist() == [0.0] * 8
    assert logp.grad[0, 8: 8 + n_trained].tolist() == pytest.approx([-a_gt] * n_trained, rel=1e-6)


def test_gt_loss_tokens_answer_masks_exactly_the_leading_tokens(tok):
    # math label: "<", "answer", ">" end before the label -> exactly those 3 are masked
    request = GTRequest("<answer>42</answer>", LABEL_AT)
    ids, mask = compose_gt_response(template_response(request), tok, "answer")
    assert ids == enc(tok, "<answer>42</answer>")
    assert [tok.decode([i]) for i in ids[:4]] == ["<", "answer", ">", "4"]
    assert mask == [0, 0, 0] + [1] * (len(ids) - 3)
    # a grounding label's first token ">[{\"" straddles the label start: it carries the label, it trains
    text = '<answer>[{"bbox_2d": [1, 2, 3, 4], "point_2d": [2, 3]}]</answer>'
    ids, mask = compose_gt_response(template_response(GTRequest(text, LABEL_AT)), tok, "answer")
    assert [tok.decode([i]) for i in ids[:3]] == ["<", "answer", '>[{"']
    assert mask == [0, 0] + [1] * (len(ids) - 2)
    # all: every token trains, ids identical to the GT agent loop's
    ids_all, mask_all = compose_gt_response(template_response(request), tok, "all")
    assert ids_all == enc(tok, "<answer>42</answer>") and mask_all == [1] * len(ids_all)


def test_template_answer_only_changes_the_mask_not_the_tokens(tok):
    batch = hand_batch(tok)
    before = batch.batch["responses"].clone()
    changed = build(batch, tok, style="template", loss_tokens="answer")
    assert changed.tolist() == []  # same tokens: no rescoring
    assert torch.equal(batch.batch["responses"], before)
    for uid in GROUPS:
        g = row_of(batch, uid, True)
        n = len(valid_ids(batch, g))
        assert batch.batch["response_mask"][g].tolist() == [0, 0, 0] + [1] * (n - 3) + [0] * (R - n)
    m = gt_style_metrics(batch)
    assert m == {"visurf/gt_think_fallback": 0.0, "visurf/gt_borrowed_share": 0.0,
                 "visurf/gt_trained_tokens_mean": pytest.approx(np.mean([len(enc(tok, g[-1][0])) - 3
                                                                        for g in GROUPS.values()]))}


def test_template_all_is_a_no_op(tok):
    batch = hand_batch(tok)
    before = {k: v.clone() for k, v in batch.batch.items()}
    assert build(batch, tok, style="template").tolist() == []
    for key, old in before.items():
        assert torch.equal(batch.batch[key], old), key
    assert not batch.non_tensor_batch[C.GT_FALLBACK].any() and not batch.non_tensor_batch[C.GT_BORROWED].any()


def test_rollout_think_with_answer_tokens_masks_think_and_answer_tag(tok):
    batch = hand_batch(tok)
    build(batch, tok, loss_tokens="answer")
    g1 = row_of(batch, "u1", True)
    n = len(valid_ids(batch, g1))
    # 8 borrowed + "><", "answer", ">" (end before the label "7") masked; "7", "</", "answer", ">", eos train
    assert batch.batch["response_mask"][g1].tolist() == [0] * 11 + [1] * (n - 11) + [0] * (R - n)


def test_fallback_when_the_borrowed_think_block_does_not_fit(tok):
    batch = hand_batch(tok)
    t = batch.batch
    g1 = row_of(batch, "u1", True)
    rolls = rollout_rows(batch, "u1")
    # u1's rollouts: a think block that fits the response length, but not with the GT answer after it
    block = "<think>" + "left " * 12 + "</think>"
    think = enc(tok, block + "<answer>1</answer>")[:R]
    assert len(enc(tok, block, eos=False)) < R < len(enc(tok, block, eos=False)) + len(enc(tok, "<answer>7</answer>"))
    for r in rolls:
        t["responses"][r] = 0
        t["responses"][r, : len(think)] = torch.tensor(think)
        t["attention_mask"][r, P:] = (torch.arange(R) < len(think)).long()
    build(batch, tok)
    assert batch.non_tensor_batch[C.GT_FALLBACK][g1]
    assert valid_ids(batch, g1) == enc(tok, "<answer>7</answer>")
    m = gt_style_metrics(batch)
    assert m["visurf/gt_think_fallback"] == 2.0  # u1 (too long) and u2 (no think block)
    assert m["visurf/gt_borrowed_share"] == pytest.approx(1 / 3)


def test_no_import_cycle_between_config_and_gt_rendering_nor_back_into_the_reward_manager():
    """Issue 18.4: config imports GT rendering (reward_control) and the seam, never the reverse; the
    start-up check takes score_row from verl_ext.visurf.scoring, not from the reward manager."""
    import ast
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]

    def imported(path: Path) -> set[str]:
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
        return names

    visurf = root / "verl_ext" / "visurf"
    for path in [visurf / "reward_control.py", visurf / "scoring.py", *sorted((visurf / "gt_styles").glob("*.py"))]:
        assert "verl_ext.visurf.config" not in imported(path), path
    assert "verl_ext.reward_manager" not in imported(visurf / "source_check.py")
    code = ("import sys, verl_ext.visurf.reward_control, verl_ext.visurf.gt_styles.rollout_think; "
            "print('verl_ext.visurf.config' in sys.modules, 'verl' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]  # GT rendering and the styles load without config or verl


def test_rollout_think_on_text_only_rows_with_1d_positions_and_a_custom_template(tok):
    """A text-only source (verl's GSM8K: ``visurf.gt_template='#### {answer}'``, a text model's 1-D
    positions): the think block of the best rollout, then ``#### 7``; positions as verl computes
    them (``compute_position_id_with_mask``)."""
    from verl.utils.model import compute_position_id_with_mask

    batch = hand_batch(tok)
    t = batch.batch
    t["position_ids"] = compute_position_id_with_mask(t["attention_mask"])
    is_gt = batch.non_tensor_batch[C.IS_GT]
    texts = np.where(is_gt, "#### 7", "").astype(object)
    build_gt_rows(batch, batch.non_tensor_batch["uid"], texts, style="rollout_think", loss_tokens="answer",
                  label_start=label_start("#### {answer}"), tokenizer=tok)
    g1 = row_of(batch, "u1", True)
    best = enc(tok, GROUPS["u1"][1][0])
    assert valid_ids(batch, g1) == best[:8] + enc(tok, ">#### 7")
    assert tok.decode(valid_ids(batch, g1), skip_special_tokens=True) == "<think>blue square left</think>#### 7"
    assert torch.equal(t["position_ids"], compute_position_id_with_mask(t["attention_mask"]))
    n_masked = text_prefix_tokens(tok, enc(tok, ">#### 7"), len(">#### "))
    assert n_masked >= 1  # ">####" (and the space) end before the label "7"
    mask = t["response_mask"][g1].tolist()
    assert mask[: 8 + n_masked] == [0] * (8 + n_masked) and mask[8 + n_masked] == 1
    assert tok.decode(t["responses"][g1, 8 + n_masked: int(t["attention_mask"][g1, P:].sum())].tolist(),
                      skip_special_tokens=True) == "7"
