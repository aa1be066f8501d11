"""The base model of the micro reproduction: a tiny Qwen2.5-VL that behaves like an instruction-tuned
VLM on the source task, built deterministically by plain-PyTorch SFT and cached by the hash of its settings.

    python -m recipe.visurf.micro.base                  # prints the base's directory (the committed artifact)
    python -m recipe.visurf.micro.base --rebuild        # trains it again, reports how far it is from the artifact
    python -m recipe.visurf.micro.base --steps N --cache DIR [--trace FILE]   # another setting, cached
    python -m recipe.visurf.micro.base --compare-trace A B   # where two builds' traces first differ

Not a method under test: it only gives every method the same starting point. Training rows are
``grid_source`` rows (``data_prep.synthetic``: colours ``SOURCE_COLORS``, always one match, never
``[]``) and ``grid_relation`` rows (relational queries, the target task's part (d)), each drawn with
one of two prompts, as an instruction-tuned model is asked:

* the thinking prompt (``GRID_PROMPT``, the row's own) -> ``<think>{think}</think><answer>{label}</answer>``
  (``BASE_RESPONSE``), the think block one of ``thinks.THINK_TEMPLATES`` (uniformly) written from the
  image's scene: which objects it sees, which is the target, where; with odds ``skip_think`` the
  answer alone (a real instruction-tuned model sometimes skips the reasoning it was asked for, so
  an answer-only response is a few nats away under the thinking prompt, not ~100);
* with odds ``direct_share`` the direct prompt (``GRID_PROMPT_DIRECT``) -> ``<answer>{label}</answer>``.

A relational row is a partial skill by design, so that RL has something to sharpen: with odds
``reason_skill[relation]`` the example reasons (``thinks.RELATION_TEMPLATE``) and answers the
neighbour (the label); otherwise it stops at the named object (``thinks.UNREASONED_TEMPLATE``) and
answers that object's box, the mistake of a model that does not reason. The odds differ by relation,
so the base's greedy answer is right for some relations and wrong for others.

Loss: mean NLL of the response tokens (``lm.sft_loss``), AdamW, gradient norm clipped at 1.

Artifact: the default setting's base is versioned in the repository, ``artifacts/base-<key>/`` next
to this file (HF model + processor files, ``base_meta.json``: settings, loss curve, build host and
kernels; ``SHA256SUMS``: the checksum of every file). ``build_base`` returns it, after checking its
checksums, for the setting it was built with: float results depend on the CPU's kernels (issue 29:
a rebuild on a machine with other kernels is another model), so every machine starts from these
bits. ``--rebuild`` trains the setting again and reports the distance to the artifact
(``model_distance``); ``--export`` writes a build as the artifact (after a change of ``BaseSpec``).

Cache (any other setting, or ``--rebuild``): ``<cache>/base-<sha256(settings)[:12]>/``, the same
files. Same settings -> same directory, reused without training (seconds); the directory is
written under a temporary name and renamed, so an interrupted build never leaves a half-written
cache entry.

Trace (``--trace FILE``, a diagnostic; it does not change the model): JSON lines with the kernel
environment, a digest of every initial parameter, the first batch's forward pass module by module
(digest and the first ``TRACE_HEAD`` values of each output), and per step the exact loss, gradient
norm, a digest of all parameters and ``TRACE_HEAD`` fixed parameter entries. ``first_difference``
names the first record where two traces differ and by how much.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

CACHE_ENV = "VISURF_MICRO_CACHE"
BASE_RESPONSE = "<think>{think}</think><answer>{answer}</answer>"
CODE_VERSION = 4  # bump when the training loop changes what a given spec produces
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
SUMS = "SHA256SUMS"
TRACE_HEAD = 32  # values per forward output / sampled parameter entries per step in a trace


@dataclass(frozen=True)
class BaseSpec:
    """Everything that determines the base model (its hash is the cache key)."""

    hidden: int = 128
    layers: int = 4
    vision_hidden: int = 32
    vision_depth: int = 2
    vocab: int = 1000
    model_seed: int = 0
    image_size: int = 84
    n_source: int = 2048
    source_seed: int = 0
    steps: int = 800
    batch: int = 16
    lr: float = 3e-3
    n_relation: int = 1536  # grid_relation rows (part d's kind of query) mixed into the training rows
    relation_seed: int = 0
    # odds that a relational training example reasons, per relation, with ``steps``: calibrated so that
    # the base solves part (d) 20-50 % of the time at temperature 1 and greedily only for some relations
    # (docs/RESULTS.md "Base model" gives the calibration; the previous 0.9 / 0.6 / 0.3 / 0.15 at 500
    # steps sampled the right answer 8-15 % of the time)
    reason_skill: tuple[tuple[str, float], ...] = (("right of", 0.95), ("below", 0.9), ("left of", 0.7),
                                                   ("above", 0.5))
    direct_share: float = 1 / 3  # rows drawn with the direct prompt (answer only)
    skip_think: float = 1 / 16  # thinking-prompt rows answered without the think block
    train_seed: int = 0

    def key(self) -> str:
        """``sha256`` of the settings and ``CODE_VERSION`` (first 12 hex digits)."""
        blob = json.dumps({"spec": asdict(self), "code": CODE_VERSION}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def default_cache() -> Path:
    """``$VISURF_MICRO_CACHE``, else ``~/.cache/visurf/micro``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "visurf" / "micro")


def base_dir(spec: BaseSpec, cache: str | Path | None = None) -> Path:
    return Path(cache or default_cache()) / f"base-{spec.key()}"


def artifact_dir(spec: BaseSpec) -> Path:
    """Where the committed base of ``spec`` lives (it exists for the default setting only)."""
    return ARTIFACTS / f"base-{spec.key()}"


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def checksums(model_dir: Path) -> dict[str, str]:
    """``{file name: sha256}`` of every file of a model directory but ``SHA256SUMS`` itself."""
    return {f.name: file_sha256(f) for f in sorted(Path(model_dir).iterdir()) if f.is_file() and f.name != SUMS}


def write_checksums(model_dir: Path) -> Path:
    """``SHA256SUMS`` (``sha256sum`` format: ``<hex>  <name>`` per line) of ``model_dir``'s files."""
    from verl_ext.atomic_io import write_text_atomically

    path = Path(model_dir) / SUMS
    write_text_atomically(path, "".join(f"{h}  {name}\n" for name, h in checksums(model_dir).items()))
    return path


def verify_checksums(model_dir: Path) -> None:
    """Raise ``ValueError`` naming every file of ``model_dir`` that is missing, extra or altered
    against its ``SHA256SUMS`` (``sha256sum -c`` checks the same)."""
    model_dir = Path(model_dir)
    sums = model_dir / SUMS
    if not sums.is_file():
        raise ValueError(f"{model_dir}: no {SUMS}")
    want = dict(reversed(line.split("  ", 1)) for line in sums.read_text().splitlines() if line.strip())
    have = checksums(model_dir)
    bad = sorted(n for n in want.keys() | have.keys() if want.get(n) != have.get(n))
    if bad:
        raise ValueError(f"{model_dir}: files missing, extra or not matching {SUMS}: {', '.join(bad)} "
                         f"(a git checkout with LFS/eol conversion? restore them with git checkout -- {model_dir})")


def kernel_env() -> dict:
    """What decides the base's float results besides its settings: torch, its CPU kernels, threads, CPU."""
    import platform

    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in _read_lines("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    env = {k: os.environ[k] for k in ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR",
                                       "ONEDNN_MAX_CPU_ISA", "OMP_NUM_THREADS") if k in os.environ}
    return {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "threads": torch.get_num_threads(), "cpu": cpu, "env": env}


def _read_lines(path: str) -> list[str]:
    try:
        return Path(path).read_text().splitlines()
    except OSError:
        return []


def base_response(label: str, think: str | None) -> str:
    """The base's training response for a label (compact label as stored by data_prep): with a think
    block (``BASE_RESPONSE``), or the answer alone (``ANSWER_TEMPLATE``) when ``think`` is None."""
    from verl_ext.constants import ANSWER_TEMPLATE

    if think is None:
        return ANSWER_TEMPLATE.replace("{answer}", label)
    return BASE_RESPONSE.format(think=think, answer=label)


def direct_prompt_row(row: dict) -> dict:
    """``row`` asked to answer directly: its prompt replaced by ``GRID_PROMPT_DIRECT``."""
    from data_prep.synthetic import GRID_PROMPT_DIRECT

    return {**row, "prompt": [{"role": "user", "content": GRID_PROMPT_DIRECT.format(
        question=row["extra_info"]["question"])}]}


def relation_answer(row: dict, reasoned: bool, image_size: int) -> str:
    """A relational row's answer: its label when ``reasoned``, else the named object's box."""
    from data_prep.synthetic import grid_label
    from recipe.visurf.micro.thinks import parse_query

    if reasoned:
        return row["reward_model"]["ground_truth"]
    colour, shape, _ = parse_query(row["extra_info"]["question"])
    return grid_label(colour, shape, image_size)


def draw_example(rng: random.Random, spec: BaseSpec, n_thinks: int) -> tuple[bool, int | None]:
    """(direct prompt?, think template index or None for answer-only) of one training example."""
    if rng.random() < spec.direct_share:
        return True, None
    if rng.random() < spec.skip_think:
        return False, None
    return False, rng.randrange(n_thinks)


class Tracer:
    """Writes a build's trace (module docstring) to ``path``; ``None`` path: records nothing."""

    def __init__(self, path: str | Path | None):
        self.file = open(path, "w") if path else None  # noqa: SIM115 (closed by close())
        self.sample = None

    def write(self, record: dict) -> None:
        if self.file:
            self.file.write(json.dumps(record) + "\n")

    def init(self, model) -> None:
        if self.file:
            import torch

            self.write({"kind": "env", **kernel_env()})
            self.write({"kind": "init", "params": {n: tensor_digest(p) for n, p in model.named_parameters()}})
            flat = sum(p.numel() for p in model.parameters())
            self.sample = torch.randperm(flat, generator=torch.Generator().manual_seed(0))[:TRACE_HEAD]

    def forward_hooks(self, model) -> list:
        """Hooks recording the next forward pass module by module (remove them after it)."""
        if not self.file:
            return []
        import torch

        def hook(name):
            def record(_module, _inputs, output):
                out = output[0] if isinstance(output, tuple) else getattr(output, "logits", output)
                if isinstance(out, torch.Tensor):
                    self.write({"kind": "forward", "module": name, "digest": tensor_digest(out),
                                "head": out.detach().reshape(-1)[:TRACE_HEAD].double().tolist()})
            return record

        return [m.register_forward_hook(hook(n or "model")) for n, m in model.named_modules()]

    def step(self, step: int, loss, grad_norm, model) -> None:
        if self.file:
            import torch

            flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
            self.write({"kind": "step", "step": step, "loss": float(loss).hex(), "grad_norm": float(grad_norm).hex(),
                        "params": tensor_digest(flat), "sample": flat[self.sample].double().tolist()})

    def close(self) -> None:
        if self.file:
            self.file.close()


def tensor_digest(t) -> str:
    """First 16 hex digits of the sha256 of a tensor's bytes (bit-identical tensors, equal digests)."""
    return hashlib.sha256(t.detach().contiguous().numpy().tobytes()).hexdigest()[:16]


def _train(spec: BaseSpec, work: Path, log=print, trace: str | Path | None = None, threads: int = 1) -> dict:
    """Build the tiny model in ``work/init``, SFT it on the source pool, save it to ``work/model``."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from data_prep.synthetic import generate
    from recipe.visurf.eval_backends import iter_rows
    from recipe.visurf.micro.lm import encode_prompt, pair_batch, response_ids, sft_loss
    from recipe.visurf.micro.thinks import THINK_TEMPLATES, parse_query, row_thinks
    from verl_ext.tiny import TinySpec, build_tiny

    torch.set_num_threads(threads)  # 1: ~10x faster than 2 threads on a shared 2-core machine
    torch.manual_seed(spec.train_seed)
    tiny = TinySpec(hidden=spec.hidden, layers=spec.layers, vision_hidden=spec.vision_hidden,
                    vision_depth=spec.vision_depth, vocab=spec.vocab, seed=spec.model_seed)
    build_tiny(work / "init", tiny)
    generate("grid_source", spec.n_source, spec.source_seed, str(work / "source.parquet"), image_size=spec.image_size)
    generate("grid_relation", spec.n_relation, spec.relation_seed, str(work / "relation.parquet"),
             image_size=spec.image_size)
    processor = AutoProcessor.from_pretrained(work / "init")
    model = AutoModelForImageTextToText.from_pretrained(work / "init", dtype=torch.float32)
    model.train()
    rows = list(iter_rows([str(work / "source.parquet"), str(work / "relation.parquet")]))
    relation = [parse_query(r["extra_info"]["question"])[2] for r in rows]
    skill = dict(spec.reason_skill)
    thinks = {(i, True): row_thinks(r) for i, r in enumerate(rows)}
    thinks.update({(i, False): row_thinks(r, reasoned=False) for i, r in enumerate(rows) if relation[i]})
    prompts: dict[tuple[int, bool], object] = {}  # (row, direct) -> encoded prompt, on first use
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr)
    rng = random.Random(spec.train_seed)
    tracer = Tracer(trace)
    tracer.init(model)
    t0, losses = time.time(), []
    for step in range(spec.steps):
        batch_prompts, batch_targets = [], []
        for _ in range(spec.batch):
            i = rng.randrange(len(rows))
            direct, k = draw_example(rng, spec, len(THINK_TEMPLATES))
            if (i, direct) not in prompts:
                prompts[i, direct] = encode_prompt(direct_prompt_row(rows[i]) if direct else rows[i], processor)
            batch_prompts.append(prompts[i, direct])
            reasoned = relation[i] is None or rng.random() < skill[relation[i]]
            label = relation_answer(rows[i], reasoned, spec.image_size)
            think = None if k is None else thinks[i, reasoned][k]
            batch_targets.append(response_ids(base_response(label, think), processor.tokenizer))
        inputs, mask = pair_batch(processor, batch_prompts, batch_targets)
        hooks = tracer.forward_hooks(model) if step == 0 else []
        loss = sft_loss(model, inputs, mask)
        for h in hooks:
            h.remove()
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        tracer.step(step + 1, loss, grad_norm, model)
        losses.append(round(float(loss), 4))
        if step % 50 == 0 or step == spec.steps - 1:
            log(f"[base] step {step + 1}/{spec.steps} loss {loss.item():.3f} ({time.time() - t0:.0f}s)")
    tracer.close()
    model.eval()
    model.save_pretrained(work / "model")
    processor.save_pretrained(work / "model")
    shutil.copy(work / "init" / "generation_config.json", work / "model" / "generation_config.json")
    return {"loss": losses, "train_s": round(time.time() - t0, 1), "host": kernel_env()}


def build_base(spec: BaseSpec = BaseSpec(), cache: str | Path | None = None, log=print, *,
               use_artifact: bool = True, trace: str | Path | None = None, threads: int = 1) -> Path:
    """The base model directory for ``spec``: the committed artifact where there is one (checksums
    verified; ``use_artifact=False`` skips it), else the cached build (trained on first use)."""
    art = artifact_dir(spec)
    if use_artifact and art.is_dir():
        verify_checksums(art)
        return art
    final = base_dir(spec, cache)
    if (final / "base_meta.json").is_file():
        if trace:
            raise ValueError(f"{final} is already built: a trace needs a build (choose an empty --cache)")
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    work = final.with_name(f".{final.name}.tmp{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    log(f"[base] building {final.name} (first use; cached afterwards)")
    try:
        info = _train(spec, work, log, trace=trace, threads=threads)
        model = work / "model"
        (model / "base_meta.json").write_text(json.dumps({"spec": asdict(spec), "key": spec.key(), **info}))
        write_checksums(model)
    except BaseException:  # a failed or interrupted build leaves no work folder behind
        shutil.rmtree(work, ignore_errors=True)
        raise
    if final.exists():  # built concurrently by someone else: same settings (compare them with model_distance)
        shutil.rmtree(work, ignore_errors=True)
        return final
    os.replace(model, final)
    shutil.rmtree(work, ignore_errors=True)
    return final


def export_artifact(built: Path, spec: BaseSpec) -> Path:
    """Copy a build of ``spec`` into ``artifact_dir(spec)`` (replacing one there) with fresh checksums."""
    meta = json.loads((Path(built) / "base_meta.json").read_text())
    if meta.get("key") != spec.key():
        raise ValueError(f"{built} is a build of base-{meta.get('key')}, not of base-{spec.key()}")
    art = artifact_dir(spec)
    tmp = art.with_name(f".{art.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(built, tmp)
    write_checksums(tmp)
    shutil.rmtree(art, ignore_errors=True)
    os.replace(tmp, art)
    return art


def model_distance(a: Path, b: Path) -> dict:
    """How far two model directories are apart: the files whose bytes differ (``SHA256SUMS`` and
    ``base_meta.json`` aside, which record the build), the number of parameter tensors that differ,
    ``max |Δparam|`` (and its tensor) and ``max |Δ| / max |param|`` over all of them."""
    from safetensors.torch import load_file

    skip = {SUMS, "base_meta.json"}
    ha, hb = checksums(a), checksums(b)
    files = sorted(n for n in (ha.keys() | hb.keys()) - skip if ha.get(n) != hb.get(n))
    pa, pb = load_file(Path(a) / "model.safetensors"), load_file(Path(b) / "model.safetensors")
    if pa.keys() != pb.keys():
        raise ValueError(f"{a} and {b} hold different tensors: {sorted(pa.keys() ^ pb.keys())[:5]}")
    worst, worst_name, differ, scale = 0.0, None, 0, 0.0
    for name in sorted(pa):
        d = float((pa[name].double() - pb[name].double()).abs().max()) if pa[name].numel() else 0.0
        scale = max(scale, float(pa[name].abs().max()) if pa[name].numel() else 0.0)
        differ += d > 0
        if d > worst:
            worst, worst_name = d, name
    return {"identical": not files, "files_differ": files, "tensors": len(pa), "tensors_differ": differ,
            "max_abs_diff": worst, "max_abs_diff_tensor": worst_name,
            "max_rel_diff": worst / scale if scale else 0.0}


def read_trace(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def _max_abs(a: list[float], b: list[float]) -> float:
    return max((abs(x - y) for x, y in zip(a, b)), default=0.0)


def first_difference(a: list[dict], b: list[dict]) -> dict | None:
    """The first record (in build order: initial parameters, the first forward pass module by module,
    then step by step loss, gradient norm, parameters) where traces ``a`` and ``b`` differ, with its
    magnitude; None when they agree everywhere (the ``env`` records are not compared)."""
    ra, rb = [r for r in a if r["kind"] != "env"], [r for r in b if r["kind"] != "env"]
    for x, y in zip(ra, rb):
        if x["kind"] != y["kind"] or x.get("module") != y.get("module") or x.get("step") != y.get("step"):
            return {"kind": "structure", "a": x, "b": y}
        if x["kind"] == "init" and x["params"] != y["params"]:
            names = [n for n in x["params"] if x["params"][n] != y["params"].get(n)]
            return {"kind": "init", "tensors": names}
        if x["kind"] == "forward" and x["digest"] != y["digest"]:
            return {"kind": "forward", "module": x["module"], "max_abs_head": _max_abs(x["head"], y["head"])}
        if x["kind"] == "step":
            for field in ("loss", "grad_norm"):
                if x[field] != y[field]:
                    fa, fb = float.fromhex(x[field]), float.fromhex(y[field])
                    return {"kind": "step", "step": x["step"], "field": field, "a": fa, "b": fb, "abs": abs(fa - fb)}
            if x["params"] != y["params"]:
                return {"kind": "step", "step": x["step"], "field": "params",
                        "max_abs_sample": _max_abs(x["sample"], y["sample"])}
    if len(ra) != len(rb):
        return {"kind": "length", "a": len(ra), "b": len(rb)}
    return None


def divergence(a: list[dict], b: list[dict]) -> list[dict]:
    """Per step of two traces: ``|Δloss|`` and ``max |Δ|`` over the sampled parameter entries."""
    sa = {r["step"]: r for r in a if r["kind"] == "step"}
    return [{"step": r["step"], "loss_abs": abs(float.fromhex(r["loss"]) - float.fromhex(sa[r["step"]]["loss"])),
             "param_abs_sample": _max_abs(r["sample"], sa[r["step"]]["sample"])}
            for r in b if r["kind"] == "step" and r["step"] in sa]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cache", default=None, help=f"cache root (default ${CACHE_ENV} or ~/.cache/visurf/micro)")
    p.add_argument("--steps", type=int, default=None, help="SFT steps (default BaseSpec.steps)")
    p.add_argument("--rebuild", action="store_true",
                   help="train the setting again (in the cache) and report its distance to the artifact; "
                        "exit 1 unless bit-identical")
    p.add_argument("--export", action="store_true", help="write the build of the setting as its artifact")
    p.add_argument("--trace", default=None, help="write the build's trace (JSON lines) to this file")
    p.add_argument("--threads", type=int, default=1, help="torch threads of the build (default 1)")
    p.add_argument("--compare-trace", nargs=2, metavar=("A", "B"), help="where two traces first differ")
    args = p.parse_args(argv)
    if args.compare_trace:
        a, b = (read_trace(t) for t in args.compare_trace)
        diff = first_difference(a, b)
        print(json.dumps({"first_difference": diff, "env": [next((r for r in t if r["kind"] == "env"), None)
                                                            for t in (a, b)]}, indent=1))
        if diff:
            div = divergence(a, b)
            marks = sorted({1, 2, 5, 10, 50, 100, 200, 400, 800, len(div)} & {d["step"] for d in div})
            for d in (d for d in div if d["step"] in marks):
                print(f"step {d['step']:4d}: |dloss| {d['loss_abs']:.3g}, max |dparam| (sampled) {d['param_abs_sample']:.3g}")
        return 0
    spec = BaseSpec() if args.steps is None else replace(BaseSpec(), steps=args.steps)
    built_here = args.rebuild or args.export or args.trace or args.threads != 1
    path = build_base(spec, args.cache, use_artifact=not built_here, trace=args.trace, threads=args.threads)
    print(path)
    if args.export:
        print(export_artifact(path, spec))
    if args.rebuild:
        art = artifact_dir(spec)
        if not art.is_dir():
            p.error(f"no artifact for base-{spec.key()} ({art}); --export writes one")
        dist = model_distance(art, path)
        print(json.dumps({"artifact": str(art), "rebuild": str(path), **dist,
                          "artifact_host": json.loads((art / "base_meta.json").read_text()).get("host"),
                          "rebuild_host": kernel_env()}, indent=1))
        return 0 if dist["identical"] else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
