"""Training-step and evaluation speed: mptune before and after its kernel choices, and PEFT, in one process.

Same frozen model (the embedded SmolLM2-135M-Instruct), same real batches (SST-2 and RTE training
rows, mixed tasks), same prompt length and optimizer (AdamW over the prompt parameters), in fp32
and, where this CPU has bf16 instructions (AVX512-BF16 or AMX: where `--model.precision auto` times
bf16 against fp32), in bf16; on a CPU without them bf16 is emulated hundreds of times slower, and
only the rate of a small bf16 product is recorded (`--precision both` times the bf16 steps
anyway). Methods are timed in interleaved rounds (one warm-up step each), so drifts of the
machine hit all of them alike; ratios are taken within the run.

Paths timed:
- "before": mptune as it was before `mptune.kernels` (fp32 weights under bf16 autocast, torch's
  SDPA): PT step, MPT step, distillation step (teacher forward + student step).
- "now": `load_backbone` as `mptune run` uses it (bf16 weights stored once, the attention kernel
  the cached auto-selection picked for training and for inference; the choices are in the output).
- PEFT MPT: `get_peft_model(base, MultitaskPromptTuningConfig(...))` as its documentation shows,
  `model(input_ids, attention_mask, labels, task_ids).loss`, backward, AdamW, on the fp32 model
  under autocast; and the same on mptune's kernels (bf16 weights, the chosen attention), which
  tells what mptune gains from its kernels apart from computing logits only at label positions.
- With --compile: mptune's MPT step on a compiled model (`--model.compile on`): the seconds its
  first steps took (the compile) and its steady step time.

Rates: the matmul throughput of 2048^3 products and of the model's own GEMMs (every linear layer's
forward product and its input-gradient product on a step's tokens), and the fraction of each that
a step reaches. FLOPs are 2 x (non-embedding parameters) x tokens per forward; the backward of a
frozen model computes input gradients only (no weight gradients), about one more forward, so a
step is 2 forwards (3 with a teacher).

The distillation stage over plain training, in the real loops (`train_distill`, `train_plm`) on
the default run's sources (SST-2, QNLI, QQP; K-of-3 batches of 8): the teachers run in each drawn
batch (`--loss.teacher_ahead 0`, as before) or ahead, longest first (the default, 128 examples);
and the plain and distillation loops again with each step's examples in length-split micro-batches
(`--<stage>.max_padding`, here --padding), with the padded share of their positions each way.

The distillation loops, the evaluation timing and the profile run in the precision `auto` picks.

Evaluation: rank classification of RTE test examples (batches of 32) and greedy generation of 8
tokens, before (file order, the old kernels) and now (longest first, the chosen inference kernel).
A torch profile of two steps of the new MPT step says where the time goes.

    python benchmarks/speed.py [--steps 8] [--batch 8] [--length 20] [--compile] [--precision native|fp32|both]
        [--name speed]

writes benchmarks/results/speed.json, speed.md and speed.png (--name: another stem, e.g. one per CPU).
"""

from __future__ import annotations

import copy
import dataclasses
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from mptune import kernels
from mptune.backbone import Backbone, precision_candidates
from mptune.config import LossArgs, PromptArgs, RunConfig, TrainArgs
from mptune.data import encode
from mptune.evaluate import choice_scores, length_order
from mptune.generate import generate
from mptune.models import load_backbone
from mptune.prompts import MultitaskPrompt, SoftPrompt, vocab_init
from mptune.stages import train_distill, train_plm
from mptune.task_data import load_tasks
from mptune.tasks import get_task, resolve_data_dir
from mptune.train import batch_stream, micro_batches, positions

import common
from common import RESULTS, MptuneStep, matmul_gflops, real_batches, step_flops


class PeftStep:
    """PEFT's documented MultitaskPromptTuning step on a copy of `backbone`'s model, in its kernels."""

    def __init__(self, backbone: Backbone, length: int):
        from peft import MultitaskPromptTuningConfig, TaskType, get_peft_model

        config = MultitaskPromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=length,
                                             num_tasks=2, num_ranks=1)
        self.backbone = copy.copy(backbone)
        self.backbone.model = copy.deepcopy(backbone.model)
        self.model = get_peft_model(self.backbone.model, config).eval()
        self.opt = torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad], lr=0.3)

    def __call__(self, batch) -> None:
        with self.backbone.compute():  # autocast and the backbone's training attention kernel
            out = self.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=batch.labels,
                             task_ids=batch.task_ids)
        self.opt.zero_grad(set_to_none=True)
        out.loss.backward()
        self.opt.step()


def before(precision: str) -> Backbone:
    """mptune's backbone before `mptune.kernels`: fp32 weights (autocast for bf16), torch's SDPA."""
    fp32 = load_backbone(precision="fp32", attention="sdpa")
    return Backbone(fp32.model, fp32.tokenizer, precision=precision, name=fp32.name, attention="sdpa")


def measure(methods: dict, batches: list, rounds: int) -> dict[str, float]:
    """Seconds per step of each method, timed in interleaved rounds after one warm-up step each."""
    for step in methods.values():
        step(batches[0])
    seconds = {name: 0.0 for name in methods}
    for r in range(rounds):
        for name, step in methods.items():
            batch = batches[r % len(batches)]
            start = time.perf_counter()
            step(batch)
            seconds[name] += time.perf_counter() - start
    return {name: s / rounds for name, s in seconds.items()}


def model_gemm_gflops(backbone: Backbone, tokens: int, dtype: torch.dtype, reps: int = 5) -> float:
    """Throughput of the model's own linear-layer products on `tokens` rows (forward x W^T and the
    input gradient g W, each weight shape weighted by how often the model has it), GFLOP/s."""
    shapes: dict[tuple[int, int], int] = {}
    for module in backbone.model.modules():
        if isinstance(module, torch.nn.Linear) and module is not backbone.lm_head:
            shapes[tuple(module.weight.shape)] = shapes.get(tuple(module.weight.shape), 0) + 1
    flops = seconds = 0.0
    for (out_f, in_f), count in shapes.items():
        w = torch.randn(out_f, in_f, dtype=dtype)
        x, g = torch.randn(tokens, in_f, dtype=dtype), torch.randn(tokens, out_f, dtype=dtype)
        for a, b in ((x, w.t()), (g, w)):  # the forward product and the input-gradient product
            a @ b
            start = time.perf_counter()
            for _ in range(reps):
                a @ b
            seconds += (time.perf_counter() - start) / reps * count
            flops += 2 * tokens * in_f * out_f * count
    return flops / seconds / 1e9


def compiled_step(precision: str, init: torch.Tensor, batches: list, rounds: int) -> dict:
    """A compiled MPT step: the compile cost `kernels.compile_model` measured on its probe batch (cold
    or warm, as the inductor cache finds it), the extra seconds of the first two real steps (a
    recompile for their shapes, if any) and the steady seconds per step."""
    backbone = load_backbone(precision=precision, compile="on")
    record = kernels.read_cache()[kernels.probe_key(backbone)]["compile"]
    step = MptuneStep(backbone, MultitaskPrompt(init, 2))
    start = time.perf_counter()
    step(batches[0])
    step(batches[1 % len(batches)])
    first = time.perf_counter() - start
    steady = measure({"compiled": step}, batches, rounds)["compiled"]
    return {"seconds_per_step": round(steady, 3), "compile_seconds": record["compile_seconds"],
            **{k: record.get(k) for k in ("infer_compile_seconds", "infer_eager_step", "infer_compiled_step")},
            "first_steps_extra_seconds": round(first - 2 * steady, 1), "attention": backbone.attention}


def distill_stage(backbone: Backbone, length: int, steps: int, padding: float, rounds: int = 2) -> dict:
    """Seconds per step of `steps` steps of the training loops on the default sources, best of
    `rounds` interleaved rounds: L_PLM only, distillation with teachers per drawn batch, and ahead;
    L_PLM only and distillation ahead again with each step's examples in length-split micro-batches
    (`--<stage>.max_padding padding`), with the padded share of the positions each way."""
    whole = TrainArgs(steps=steps, batch_size=8, warmup_steps=2, max_padding=1.0)  # each step's batch as drawn
    cfg = RunConfig(distill=whole, prompt=PromptArgs(length=length))
    data = load_tasks(cfg, backbone, cfg.sources, "dev")
    init = vocab_init(backbone.embeddings, length, torch.Generator().manual_seed(0))
    teachers = SoftPrompt(init.expand(len(data), -1, -1))
    split = dataclasses.replace(cfg.distill, max_padding=padding)

    def distill(ahead: int, args: TrainArgs = cfg.distill):
        run = dataclasses.replace(cfg, loss=LossArgs(teacher_ahead=ahead), distill=args)
        return lambda folder: train_distill(run, backbone, MultitaskPrompt(init, len(data)), teachers, data, folder)

    def plain(args: TrainArgs):
        return lambda folder: train_plm(backbone, MultitaskPrompt(init, len(data)), data, args, cfg.data.kappa,
                                        cfg.seed, folder, "plain")

    ahead = f"distillation, teachers {LossArgs.teacher_ahead} examples ahead"
    loops = {"L_PLM only": plain(cfg.distill), "distillation, teachers in each drawn batch": distill(0),
             ahead: distill(LossArgs.teacher_ahead),
             f"L_PLM only, max_padding {padding}": plain(split),
             f"{ahead}, max_padding {padding}": distill(LossArgs.teacher_ahead, split)}
    seconds = {name: float("inf") for name in loops}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            for i, (name, loop) in enumerate(loops.items()):
                folder = Path(tmp) / f"{r}-{i}"
                folder.mkdir()
                start = time.perf_counter()
                loop(folder)
                seconds[name] = min(seconds[name], (time.perf_counter() - start) / steps)
    plain_step = seconds["L_PLM only"]
    return {"steps": steps, "padding": training_padding(cfg, data, split, steps),
            "rows": {n: {"seconds_per_step": round(s, 3), "over_plain": round(s / plain_step, 2)}
                     for n, s in seconds.items()}}


def training_padding(cfg: RunConfig, data: list, split: TrainArgs, steps: int) -> dict:
    """The padded share of the positions (prompt + tokens) of the first `steps` training batches that
    `cfg`'s distill loop draws, in whole batches (cfg.distill) and in micro-batches split as `split`."""
    length, shares = cfg.prompt.length, {}
    for name, args in (("whole batches", cfg.distill), (f"max_padding {split.max_padding}", split)):
        real = padded = 0
        stream = batch_stream([d.train for d in data], cfg.distill, cfg.data.kappa, cfg.seed)
        for _, items in zip(range(steps), stream):
            for part in micro_batches(items, args, length):
                sizes = [length + positions(e) for e in part]
                real, padded = real + sum(sizes), padded + max(sizes) * len(sizes)
        shares[name] = round(1 - real / padded, 3)
    return shares


def eval_speed(old: Backbone, new: Backbone, init: torch.Tensor, examples: int) -> dict:
    """Rank classification (batches of 32) and greedy generation of 8 tokens, before and now."""
    task = get_task("rte")
    items = encode(task.load(resolve_data_dir(None), "test", 42)[:examples], new.tokenizer, False, 128)
    prompt = SoftPrompt(init[None])
    longest_first = [items[i] for i in length_order(items)]

    def padding(order) -> float:
        padded = real = 0
        for i in range(0, len(order), 32):
            lengths = [len(it.input_ids) for it in order[i:i + 32]]
            padded += max(lengths) * len(lengths)
            real += sum(lengths)
        return round(1 - real / padded, 3)

    def best(fn) -> float:
        times = []
        for _ in range(2):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return min(times)

    with torch.no_grad():
        rows = {
            "rank classification, before": best(lambda: choice_scores(old, prompt, items, task.choices)),
            "rank classification, now": best(lambda: choice_scores(new, prompt, longest_first, task.choices)),
            "generation (8 tokens), before": best(lambda: generate(old, prompt, items[:32], 8, eos_id=-1)),
            "generation (8 tokens), now": best(lambda: generate(new, prompt, longest_first[:32], 8, eos_id=-1)),
        }
    counts = {name: examples if name.startswith("rank") else 32 for name in rows}
    return {"examples": examples, "padding": {"before": padding(items), "now": padding(longest_first)},
            "rows": {name: {"seconds": round(sec, 2), "examples_per_s": round(counts[name] / sec, 1)}
                     for name, sec in rows.items()}}


def profile_table(backbone: Backbone, init: torch.Tensor, batches: list, top: int = 10) -> list[dict]:
    """Self time of the top ops over two MPT steps on `backbone` (torch profiler)."""
    from torch.profiler import ProfilerActivity, profile

    step = MptuneStep(backbone, MultitaskPrompt(init, 2))
    step(batches[0])
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for batch in batches[:2]:
            step(batch)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    return [{"op": e.key, "share": round(e.self_cpu_time_total / total, 3), "calls": e.count} for e in events[:top]]


PARTS = ("steps", "stages", "eval", "profile")
"""What speed.py can time (--parts)."""
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
"""The compute dtype of each precision timed."""


def time_steps(results: dict, precision: str, old: Backbone, new: Backbone, batches: list, init: torch.Tensor,
               args) -> None:
    """The fixed-batch step of every method (mptune before and now, PEFT, compiled with --compile), timed in
    interleaved rounds, with its rates against the matmul throughput measured here; into `results`."""
    dtype = DTYPES[precision]
    tokens = round(sum(b.input_ids.numel() + args.length * len(b) for b in batches) / len(batches))
    results["model_gemm_gflops"][precision] = round(model_gemm_gflops(new, tokens, dtype), 1)
    methods = {}
    for label, bb in (("before", old), ("now", new)):
        methods[f"mptune PT ({label})"] = MptuneStep(bb, SoftPrompt(init.expand(2, -1, -1)))
        methods[f"mptune MPT ({label})"] = MptuneStep(bb, MultitaskPrompt(init, 2))
        methods[f"mptune distillation ({label})"] = MptuneStep(bb, MultitaskPrompt(init, 2),
                                                               teacher=SoftPrompt(init.expand(2, -1, -1)))
    methods["PEFT MPT"] = PeftStep(old, args.length)
    methods["PEFT MPT on mptune's kernels"] = PeftStep(new, args.length)
    per_step = measure(methods, batches, args.steps)
    if args.compile:
        results["compiled"][precision] = compiled_step(precision, init, batches, args.steps)
        per_step["mptune MPT (compiled)"] = results["compiled"][precision]["seconds_per_step"]
    rows = {}
    for name, sec in per_step.items():
        flops = step_flops(new, batches, args.length, "distillation" in name) / sec / 1e9
        peer = name.replace("(now)", "(before)").replace("(compiled)", "(before)")
        rows[name] = {"seconds_per_step": round(sec, 3), "examples_per_s": round(args.batch / sec, 2),
                      "vs_peft_mpt": round(per_step["PEFT MPT"] / sec, 2),
                      "vs_before": round(per_step[peer] / sec, 2) if peer in per_step else None,
                      "fraction_of_2048_matmul": round(flops / results["matmul_gflops"][precision], 3),
                      "fraction_of_model_gemms": round(flops / results["model_gemm_gflops"][precision], 3)}
    results["precision"][precision] = rows
    results["distill_over_plain"][precision] = round(per_step["mptune distillation (now)"] /
                                                     per_step["mptune MPT (now)"], 2)


def main() -> None:
    parser = common.parser(__doc__)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per method and precision")
    parser.add_argument("--batch", type=int, default=8, help="examples per step")
    parser.add_argument("--length", type=int, default=20, help="prompt length l")
    parser.add_argument("--eval-examples", type=int, default=96, help="RTE test examples rank-classified")
    parser.add_argument("--stage-steps", type=int, default=32, help="steps per loop in the distillation-stage timing")
    parser.add_argument("--compile", action="store_true", help="also time a compiled model (minutes on a CPU)")
    parser.add_argument("--precision", choices=("native", "fp32", "both"), default="native",
                        help="precisions whose steps are timed: 'native' times bf16 too only where this CPU has bf16 "
                             "instructions (where --model.precision auto measures it); 'both' forces bf16 (on a "
                             "CPU without AVX512-BF16/AMX it is emulated, hundreds of times slower)")
    parser.add_argument("--name", default="speed", help="results file stem under benchmarks/results/")
    parser.add_argument("--parts", default="steps,stages,eval,profile",
                        help="what to time, comma-separated: steps (the fixed-batch steps of each method, and the "
                             "compiled one), stages (the training loops), eval, profile")
    parser.add_argument("--padding", type=float, default=TrainArgs.max_padding,
                        help="max_padding of the length-split training loops timed under 'stages' (the others "
                             "run each step's batch whole)")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    if not parts <= set(PARTS):
        parser.error(f"--parts takes {', '.join(PARTS)}, got {args.parts!r}")
    common.setup(args.threads)
    cpu = torch.device("cpu")
    native = tuple(precision_candidates("auto", cpu))  # bf16 too where this CPU has bf16 instructions
    probed = load_backbone(precision="auto")  # what `mptune run` computes in here (measured once, cached)
    auto, auto_entry = probed.precision, kernels.read_cache().get(kernels.precision_key(probed.model))
    del probed
    timed = {"native": native, "fp32": ("fp32",), "both": ("fp32", "bf16")}[args.precision]

    results = {"machine": {"cpu": kernels.device_description(cpu), "threads": torch.get_num_threads(),
                           "torch": torch.__version__, "platform": platform.platform(), "auto_precision": auto},
               "settings": {k: v for k, v in vars(args).items() if k not in ("threads", "name")},
               "matmul_gflops": {}, "model_gemm_gflops": {}, "attention": {}, "precision": {}, "compiled": {},
               "distill_over_plain": {}, "stage_precision": auto if auto in timed else "fp32"}
    if isinstance(auto_entry, dict):
        results["auto_precision_probe"] = {k: auto_entry.get(k) for k in ("seconds", "margin", "measured")}
    if "bf16" not in native:  # why bf16 is no candidate: the emulated product, on a size that takes seconds
        results["emulated_bf16_matmul_gflops_512"] = round(matmul_gflops(torch.bfloat16, n=512, reps=2), 2)
        results["fp32_matmul_gflops_512"] = round(matmul_gflops(torch.float32, n=512, reps=20), 1)
    for precision in timed:
        results["matmul_gflops"][precision] = round(matmul_gflops(DTYPES[precision]), 1)
        old, new = before(precision), load_backbone(precision=precision)
        results["attention"][precision] = new.attention
        batches = real_batches(new, args.steps, args.batch)
        init = vocab_init(new.embeddings, args.length, torch.Generator().manual_seed(0))
        if "steps" in parts:
            time_steps(results, precision, old, new, batches, init, args)
        if precision == results["stage_precision"]:
            if "stages" in parts:
                results["distill_stage"] = distill_stage(new, args.length, args.stage_steps, args.padding)
            if "eval" in parts:
                results["eval"] = eval_speed(old, new, init, args.eval_examples)
            if "profile" in parts:
                results["profile"] = profile_table(new, init, batches)
        del old, new
    write(results, args.name)


def write(results: dict, name: str) -> None:
    header = ["precision", "method", "s/step", "examples/s", "vs PEFT MPT", "vs before",
              "of 2048³ matmul rate", "of model-GEMM rate"]
    rows = [[precision, name, r["seconds_per_step"], r["examples_per_s"], f"{r['vs_peft_mpt']}x",
             f"{r['vs_before']}x" if r["vs_before"] else "", f"{r['fraction_of_2048_matmul']:.0%}",
             f"{r['fraction_of_model_gemms']:.0%}"]
            for precision, table in results["precision"].items() for name, r in table.items()]
    lines = [common.md_table(header, rows)] if rows else []
    peaks, gemms = results["matmul_gflops"], results["model_gemm_gflops"]
    stage_precision = results["stage_precision"]
    lines.append("Matmul throughput in the same run: 2048³ " + ", ".join(f"{p} {r}" for p, r in peaks.items())
                 + " GFLOP/s; the model's own GEMMs " + ", ".join(f"{p} {r}" for p, r in gemms.items())
                 + f" GFLOP/s ({results['machine']['threads']} threads, {results['machine']['cpu']}).")
    if "emulated_bf16_matmul_gflops_512" in results:
        lines.append(f"No bf16 instructions on this CPU (`--model.precision auto` computes in "
                     f"{results['machine']['auto_precision']}): a 512³ bf16 product ran at "
                     f"{results['emulated_bf16_matmul_gflops_512']} GFLOP/s against fp32's "
                     f"{results['fp32_matmul_gflops_512']}, so `--precision native` times fp32 steps only.")
    if probe := results.get("auto_precision_probe"):
        lines.append(f"`--model.precision auto` chose {results['machine']['auto_precision']} on its probe "
                     f"(training step / no-grad forward, seconds): " + "; ".join(
                         f"{p} {t['train']} / {t['infer']}" if t else f"{p} failed"
                         for p, t in (probe["seconds"] or {}).items()) + ".")
    lines.append("Attention chosen (train / infer): " + "; ".join(
        f"{p} {a['train']} / {a['infer']}" for p, a in results["attention"].items()) + ".")
    if results["distill_over_plain"]:
        lines.append("Distillation step over the plain MPT step (now): " + ", ".join(
            f"{p} {r}x" for p, r in results["distill_over_plain"].items()) + ".")
    for precision, c in results["compiled"].items():
        lines.append(f"Compiled ({precision}): {c['seconds_per_step']} s/step after {c['compile_seconds']} s of "
                     f"compiling (the first two training steps then took {c['first_steps_extra_seconds']} s more "
                     f"than two steady ones).")
        if c.get("infer_compile_seconds") is not None:
            lines.append(f"Its scoring graph (no-grad forward of the probe batch) compiled in "
                         f"{c['infer_compile_seconds']} s more: {c['infer_eager_step']} s eager, "
                         f"{c['infer_compiled_step']} s compiled.")
    if "distill_stage" in results:
        stage = results["distill_stage"]
        lines.append(f"\nThe training loops on the default sources ({stage_precision}, {stage['steps']} steps of 8, "
                     f"best of 2):\n")
        lines.append(common.md_table(["loop", "s/step", "over L_PLM only"],
                                     [[n, r["seconds_per_step"], f"{r['over_plain']}x"]
                                      for n, r in stage["rows"].items()]))
        if "padding" in stage:
            lines.append("Padded share of the positions of those training batches: " + ", ".join(
                f"{n} {v:.0%}" for n, v in stage["padding"].items()) + ".")
    if "eval" in results:
        ev = results["eval"]
        lines.append(f"\nEvaluation ({stage_precision}, {ev['examples']} RTE test examples, batches of 32; "
                     f"padded share of the batches {ev['padding']['before']:.0%} before, "
                     f"{ev['padding']['now']:.0%} longest first):\n")
        lines.append(common.md_table(["evaluation", "seconds", "examples/s"],
                                     [[n, r["seconds"], r["examples_per_s"]] for n, r in ev["rows"].items()]))
    if "profile" in results:
        lines.append(f"Where a {stage_precision} MPT step's time goes now (torch profiler, self time over two "
                     f"steps):\n")
        lines.append(common.md_table(["op", "share", "calls"],
                                     [[p["op"], f"{p['share']:.0%}", p["calls"]] for p in results["profile"]]))
    lines.append(f"Settings: {results['settings']}.")
    markdown = "\n".join(lines) + "\n"
    fig, (ax,) = common.figure(1, width=9, height=4.5)
    for i, (precision, table) in enumerate(results["precision"].items()):
        names = list(table)
        ax.barh([f"{precision} {n}" for n in names], [table[n]["examples_per_s"] for n in names],
                color=f"C{i}")
    ax.set_xlabel("training examples / s (higher is faster)")
    ax.invert_yaxis()
    common.write_outputs(RESULTS / name, results, markdown, fig)
    print(markdown)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
