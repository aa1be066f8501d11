"""Math reward (MathVista, Geometry3K): is the final answer equal to the label (math-verify)?

``score = thinking_format + accuracy`` (max 2). ``answer_format`` (1 when an answer was found)
and ``non_repeat`` are returned for logging with weight 0: splitting on '.' breaks decimals, so
the sentence-repeat rule says little about math reasoning.

The answer is the content of the last ``<answer>…</answer>``; a ``\\boxed{…}`` inside it, or, with
no answer tags, the last ``\\boxed{…}`` of the response, is used instead. No answer → accuracy 0.

Accuracy, in order (the first rule that decides wins):

1. the answer equals the label after whitespace/``$`` normalisation → 1 (no math-verify call);
2. multiple choice (``choices`` given, the label is an option letter or an option text): an
   option letter in the answer (``B``, ``(B)``, ``B.``, ``B) 5``) decides by itself; otherwise the
   answer must equal the correct option's text (normalised string, then math-verify);
3. math-verify: ``verify(parse(\\boxed{label}), parse(\\boxed{answer}))``.

Timeouts. math-verify bounds its own work with ``signal.alarm``, which only works in a process's
main thread; verl calls reward functions from executor threads (its reward loop runs
``compute_score`` through ``loop.run_in_executor``), where math-verify would raise. So:

* in the main thread: math-verify runs in-process with ``timeout_s`` per parse / comparison;
* in any other thread: the comparison is sent to the shared ``MathVerifyPool``, whose worker
  processes (fresh interpreters running ``_math_worker.py``) run it in their
  main thread with math-verify's own timeouts active; the caller waits at most
  ``MathVerifyPool.backstop_s`` per comparison, the wait for a free worker included (a request
  that gets none in time is shed), a worker stuck beyond that is killed and replaced, and the
  answer scores 0 (``invalid_reason="verify_timeout"``). The pool has
  ``$VISURF_MATH_VERIFY_WORKERS`` workers (default: the CPU count clipped to [2, 4]).

``compute_score_batch`` scores many responses, sending the math-verify comparisons to a pool in
chunks when one is given (``bench/bench_rewards.py`` measures both).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import queue
import re
import select
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from verl_ext.rewards._math_worker import math_verify_equal as _math_verify_equal
from verl_ext.rewards.common import thinking_reward
from verl_ext.rewards.labels import answer_label
from verl_ext.rewards.parsing import ParsedResponse, extract_boxed, non_repeat, parse_response

__all__ = [
    "MAX_SCORE",
    "MATH_VERIFY_TIMEOUT_S",
    "MathVerifyPool",
    "extract_math_answer",
    "answers_match",
    "compute_score",
    "compute_score_batch",
]

logger = logging.getLogger(__name__)

MAX_SCORE = 2.0
MATH_VERIFY_TIMEOUT_S = 3  # per math-verify parse / comparison (signal.alarm: whole seconds)
_LETTER_RE = re.compile(r"^\(?([A-Z])\)?(?:[.:)]|\s|$)")
_BARE_LETTER_RE = re.compile(r"\(?\s*([A-Za-z])\s*\)?\.?")  # the whole answer is one letter: "b", "(b)"


# --------------------------------------------------------------------------------------------
# Answer extraction and comparison
# --------------------------------------------------------------------------------------------
def extract_math_answer(resp: ParsedResponse) -> str | None:
    """The final answer of a math response (module docstring), stripped; None when absent."""
    if resp.answer is not None:
        boxed = extract_boxed(resp.answer)
        return (boxed if boxed is not None else resp.answer).strip()
    boxed = extract_boxed(resp.text)
    return None if boxed is None else boxed.strip()


def _norm(s: str) -> str:
    """Whitespace-, ``$``- and trailing-period-insensitive, case-folded form of an answer."""
    s = s.strip().strip("$").strip()
    if s.endswith(".") and not s[:-1].rstrip().endswith("."):
        s = s[:-1]
    return " ".join(s.split()).casefold()


def _mc_index(gold: str, choices: Sequence[str]) -> int | None:
    """Index of the correct option: the label is an option letter or an option text."""
    g = gold.strip()
    if len(g) == 1 and "A" <= g.upper() <= "Z" and ord(g.upper()) - ord("A") < len(choices):
        return ord(g.upper()) - ord("A")
    ng = _norm(g)
    for i, c in enumerate(choices):
        if _norm(c) == ng:
            return i
    return None


def _decide_without_math_verify(pred: str, gold: str, choices: Sequence[str] | None) -> tuple[bool | None, str]:
    """(decision, text to math-verify against gold): rules 1-2 of the module docstring."""
    if _norm(pred) == _norm(gold):
        return True, gold
    if choices:
        idx = _mc_index(gold, choices)
        if idx is not None:
            m = _LETTER_RE.match(pred.strip()) or _BARE_LETTER_RE.fullmatch(pred.strip())
            letter = m.group(1).upper() if m else None
            if letter and ord(letter) - ord("A") < len(choices):
                return ord(letter) - ord("A") == idx, gold
            target = str(choices[idx])
            if _norm(pred) == _norm(target):
                return True, target
            return None, target  # math-verify the answer against the option text
    return None, gold


def answers_match(
    pred: str, gold: str, choices: Sequence[str] | None = None, timeout_s: int = MATH_VERIFY_TIMEOUT_S
) -> bool:
    """Is the extracted answer ``pred`` correct for label ``gold``? Runs math-verify in-process
    (``timeout_s`` active only in the main thread; elsewhere use ``compute_score``, which routes
    to the pool)."""
    decision, target = _decide_without_math_verify(pred, gold, choices)
    if decision is not None:
        return decision
    main = threading.current_thread() is threading.main_thread()
    return _math_verify_equal(target, pred, timeout_s if main else None)


# --------------------------------------------------------------------------------------------
# Process pool (math-verify with working timeouts from any thread)
# --------------------------------------------------------------------------------------------
_WORKER_SCRIPT = str(Path(__file__).resolve().with_name("_math_worker.py"))


class _Worker:
    """One ``python -m verl_ext.rewards._math_worker`` process, JSON lines over pipes.

    A fresh interpreter (not a multiprocessing fork/spawn): nothing of the caller's state, main
    module or threads is inherited, so it behaves the same in ray workers, pytest and scripts.
    ``-I`` keeps the script's folder (which holds this ``math.py``) off ``sys.path``. The process
    starts at construction; its first call waits for it to be ready.
    """

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-I", _WORKER_SCRIPT],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            bufsize=1,
        )
        self.spawned_at = time.monotonic()
        self._started = False

    def call(self, tasks: list, deadline: float) -> list | None:
        """Results for ``tasks``, or None when they are not done by ``deadline`` (``time.monotonic``).

        A worker busy past the deadline is killed (a stuck sympy call cannot be interrupted
        otherwise); one still starting is left to start (the next call uses it) unless it has
        been starting for ``_WORKER_START_TIMEOUT_S``."""
        try:
            if not self._started:  # interpreter + math-verify import
                line = self._readline(min(deadline, self.spawned_at + _WORKER_START_TIMEOUT_S))
                if line is None:
                    if time.monotonic() >= self.spawned_at + _WORKER_START_TIMEOUT_S:
                        self.kill()
                    return None
                if line != "ready":
                    raise OSError("math worker did not start")
                self._started = True
            self.proc.stdin.write(json.dumps(tasks) + "\n")
            self.proc.stdin.flush()
            line = self._readline(deadline)
            if line is None:
                self.kill()
                return None
            return json.loads(line)
        except (OSError, ValueError):  # broken pipe / dead worker / garbled line
            self.kill()
            return None

    def _readline(self, deadline: float) -> str | None:
        """The next line, or None when none arrives before ``deadline``."""
        ready, _, _ = select.select([self.proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            return None
        line = self.proc.stdout.readline()
        if not line:
            raise OSError("math worker exited")
        return line.strip()

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass


_WORKER_START_TIMEOUT_S = 120.0
WORKERS_ENV = "VISURF_MATH_VERIFY_WORKERS"  # size of the shared pool (default: default_num_workers())


def default_num_workers() -> int:
    """Size of the shared pool: ``$VISURF_MATH_VERIFY_WORKERS``, else the CPU count clipped to [2, 4]."""
    value = os.environ.get(WORKERS_ENV, "").strip()
    if value:
        try:
            n = int(value)
        except ValueError:
            raise ValueError(f"{WORKERS_ENV}={value!r}: expected a whole number of workers >= 1") from None
        if n < 1:
            raise ValueError(f"{WORKERS_ENV}={value!r}: expected a whole number of workers >= 1")
        return n
    return max(2, min(4, os.cpu_count() or 2))


class MathVerifyPool:
    """Worker processes running math-verify with its signal timeouts active.

    Thread-safe. Every request returns within ``backstop_s`` per comparison, the wait for a free
    worker included: a request that gets no worker in time is shed, and a worker that exceeds the
    deadline is killed (a stuck sympy call cannot be interrupted otherwise) and replaced at once
    (the new process starts in the background). Shed and killed comparisons count as not equal
    (``None`` in the results; ``n_shed`` / ``n_backstop_timeouts`` count them), so a batch of hard
    answers costs at most one budget of latency, not one per answer ahead in the queue.
    """

    _shared: MathVerifyPool | None = None
    _shared_lock = threading.Lock()

    def __init__(self, num_workers: int | None = None, timeout_s: int = MATH_VERIFY_TIMEOUT_S):
        num_workers = default_num_workers() if num_workers is None else num_workers
        if num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}")
        self.num_workers = num_workers
        self.timeout_s = timeout_s
        # parse(gold) + parse(pred) + verify (a few comparisons), each bounded by timeout_s
        self.backstop_s = 4 * timeout_s + 5
        self._idle: queue.Queue[_Worker | None] = queue.Queue()
        for _ in range(num_workers):
            self._idle.put(None)  # a slot; the process starts on first use
        self.n_backstop_timeouts = 0
        self.n_shed = 0
        self._closed = False

    @classmethod
    def shared(cls) -> MathVerifyPool:
        """The process-wide pool used by ``compute_score`` outside the main thread."""
        with cls._shared_lock:
            if cls._shared is None:
                cls._shared = cls()
                atexit.register(cls._shared.close)
            return cls._shared

    def _run(self, tasks: list) -> list:
        budget = self.backstop_s * len(tasks)
        deadline = time.monotonic() + budget
        try:
            worker = self._idle.get(timeout=budget)
        except queue.Empty:
            self.n_shed += len(tasks)
            logger.warning("math-verify: no worker free within the %.0fs budget (all %d busy); %d comparison(s) "
                           "scored as not equal", budget, self.num_workers, len(tasks))
            return [None] * len(tasks)
        try:
            if worker is None or not worker.alive:
                worker = _Worker()
            res = worker.call(tasks, deadline)
            if res is None:
                if worker.alive:  # still starting: the next request uses it
                    self.n_shed += len(tasks)
                    logger.warning("math-verify: worker not started within the %.0fs budget; %d comparison(s) "
                                   "scored as not equal", budget, len(tasks))
                else:
                    self.n_backstop_timeouts += 1
                    logger.warning("math-verify worker exceeded its %ss budget; replaced", self.backstop_s)
                    worker = _Worker()  # starts now, ready for the next request
                return [None] * len(tasks)
            return res
        finally:
            self._idle.put(worker)

    def equal(self, target: str, pred: str) -> bool | None:
        """math-verify ``target == pred``; None when the worker had to be killed."""
        return self._run([(target, pred, self.timeout_s)])[0]

    def equal_many(self, pairs: Sequence[tuple[str, str]], chunksize: int = 32) -> list[bool | None]:
        """``equal`` for many (target, pred) pairs, spread over the workers in chunks."""
        tasks = [(t, p, self.timeout_s) for t, p in pairs]
        chunks = [tasks[i : i + chunksize] for i in range(0, len(tasks), chunksize)]
        if len(chunks) <= 1:
            return self._run(chunks[0]) if chunks else []
        with ThreadPoolExecutor(self.num_workers) as ex:
            return [r for res in ex.map(self._run, chunks) for r in res]

    def close(self) -> None:
        """Stop every worker process (the pool can still be used: workers restart on demand)."""
        workers = []
        while True:
            try:
                workers.append(self._idle.get_nowait())
            except queue.Empty:
                break
        for w in workers:
            if w is not None:
                w.kill()
        for _ in workers:
            self._idle.put(None)


# --------------------------------------------------------------------------------------------
# Scorers
# --------------------------------------------------------------------------------------------
def _result(thinking: float, found: bool, acc: float, rep: float, reason: str) -> dict:
    return {
        "score": thinking + acc,
        "thinking_format": thinking,
        "answer_format": 1.0 if found else 0.0,
        "accuracy": acc,
        "non_repeat": rep,
        "invalid_reason": reason,
    }


def _choices_list(choices) -> list[str] | None:
    if choices is None:
        return None
    items = choices.tolist() if hasattr(choices, "tolist") else list(choices)
    return [str(c) for c in items] or None


def compute_score(
    solution_str: str,
    ground_truth: str,
    *,
    is_gt: bool = False,
    gt_thinking_reward: str = "zero",
    choices: Sequence[str] | None = None,
    timeout_s: int = MATH_VERIFY_TIMEOUT_S,
    **kwargs,
) -> dict:
    """Math reward of one response (module docstring for the definition and the timeouts).

    Args:
        solution_str: the decoded response; any string (never raises for it).
        ground_truth: the canonical answer (``"3"``, ``"\\frac{1}{2}"``) or an option letter; a
            missing one (None, NaN, blank) raises ValueError (``labels.answer_label``).
        is_gt: the row is the injected ground-truth response (docs/METHOD.md §3.2).
        gt_thinking_reward: ``"zero"`` or ``"full"``.
        choices: option texts of a multiple-choice question (``extra_info["choices"]``).
        timeout_s: math-verify timeout per parse / comparison, in seconds.

    Returns:
        dict with ``score`` and ``thinking_format``, ``answer_format``, ``accuracy``,
        ``non_repeat`` (floats), ``invalid_reason`` (str).
    """
    gold = answer_label(ground_truth)  # the label as the GT renderer reads it too; a missing one raises
    resp = parse_response(solution_str)
    thinking = thinking_reward(resp.think_format, is_gt=is_gt, gt_thinking_reward=gt_thinking_reward)
    rep = non_repeat(resp.text)
    pred = extract_math_answer(resp)
    if not pred:
        return _result(thinking, False, 0.0, rep, "no_answer")
    decision, target = _decide_without_math_verify(pred, gold, _choices_list(choices))
    reason = ""
    if decision is None:
        if threading.current_thread() is threading.main_thread():
            decision = _math_verify_equal(target, pred, timeout_s)
        else:
            decision = MathVerifyPool.shared().equal(target, pred)
            if decision is None:
                decision, reason = False, "verify_timeout"
    return _result(thinking, True, 1.0 if decision else 0.0, rep, reason)


def compute_score_batch(
    solution_strs: Sequence[str],
    ground_truths: Sequence[str],
    *,
    choices: Sequence[Sequence[str] | None] | None = None,
    is_gt: Sequence[bool] | None = None,
    gt_thinking_reward: str = "zero",
    pool: MathVerifyPool | None = None,
    timeout_s: int = MATH_VERIFY_TIMEOUT_S,
) -> list[dict]:
    """``compute_score`` for many responses. Rules 1-2 run in-process; the math-verify calls go
    to ``pool`` when given (in chunks), else run in this process when it is the main thread
    (timeouts active), else go to ``MathVerifyPool.shared()``."""
    n = len(solution_strs)
    if len(ground_truths) != n:
        raise ValueError(f"{n} responses but {len(ground_truths)} labels")
    choices = [None] * n if choices is None else list(choices)
    is_gt = [False] * n if is_gt is None else [bool(x) for x in is_gt]
    rows = []  # (thinking, found, decision, rep, reason)
    pending: list[tuple[int, str, str]] = []
    golds = [answer_label(g) for g in ground_truths]  # a missing label raises, as in compute_score
    for k in range(n):
        resp = parse_response(solution_strs[k])
        thinking = thinking_reward(resp.think_format, is_gt=is_gt[k], gt_thinking_reward=gt_thinking_reward)
        rep = non_repeat(resp.text)
        pred = extract_math_answer(resp)
        if not pred:
            rows.append([thinking, False, False, rep, "no_answer"])
            continue
        decision, target = _decide_without_math_verify(pred, golds[k], _choices_list(choices[k]))
        rows.append([thinking, True, decision, rep, ""])
        if decision is None:
            pending.append((k, target, pred))
    if pending:
        if pool is None and threading.current_thread() is not threading.main_thread():
            pool = MathVerifyPool.shared()  # no signal timeouts here: use the workers'
        if pool is not None:
            results = pool.equal_many([(t, p) for _, t, p in pending])
        else:
            results = [_math_verify_equal(t, p, timeout_s) for _, t, p in pending]
        for (k, _, _), res in zip(pending, results, strict=True):
            rows[k][2] = bool(res)
            if res is None:
                rows[k][4] = "verify_timeout"
    return [_result(t, f, 1.0 if d else 0.0, r, why) for t, f, d, r, why in rows]
