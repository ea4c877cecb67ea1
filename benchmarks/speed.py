"""Training-step throughput: mptune against PEFT's MultitaskPromptTuning, side by side in one process.

Same frozen model (the embedded SmolLM2-135M-Instruct), same real batches (SST-2 and RTE training
rows, mixed tasks), same prompt length and optimizer (AdamW over the prompt parameters), in fp32
and with bf16 autocast. Methods are timed in interleaved rounds so drifts of the machine hit all of
them alike; the table reports examples/s and ratios against PEFT.

- mptune PT step: Backbone.forward (logits at label positions only) + L_PLM + backward + AdamW.
- mptune MPT step: the same with the MultitaskPrompt P* o u v^T.
- mptune distillation step: teacher forward (no grad) + student forward/backward with
  L_PLM + lambda (L_logits + L_hidden); PEFT has no distillation, so it has no PEFT peer.
- PEFT MPT step: `get_peft_model(base, MultitaskPromptTuningConfig(...))` called as its
  documentation shows, `model(input_ids, attention_mask, labels, task_ids).loss`, backward, AdamW.

It also measures the CPU's fp32 and bf16 matmul throughput with torch and reports the fraction of
it that each step reaches. FLOPs are counted as 2 x (non-embedding parameters) x tokens for a
forward pass; the backward pass of a frozen model computes gradients for activations only (no
weight gradients), about one more forward's worth, so a step is 2 forwards (3 with a teacher).

    python benchmarks/speed.py [--steps 8] [--batch 8] [--length 20]

writes benchmarks/results/speed.json and speed.md.
"""

from __future__ import annotations

import copy
import json
import os
import platform
import time

import torch

import common
from common import RESULTS, MptuneStep, matmul_gflops, real_batches, step_flops
from mptune.models import load_backbone
from mptune.prompts import MultitaskPrompt, SoftPrompt, vocab_init


class PeftStep:
    def __init__(self, base: torch.nn.Module, length: int, bf16: bool):
        from peft import MultitaskPromptTuningConfig, TaskType, get_peft_model

        config = MultitaskPromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=length,
                                             num_tasks=2, num_ranks=1)
        self.model = get_peft_model(copy.deepcopy(base), config).eval()
        self.opt = torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad], lr=0.3)
        self.bf16 = bf16

    def __call__(self, batch) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            out = self.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=batch.labels,
                             task_ids=batch.task_ids)
        self.opt.zero_grad(set_to_none=True)
        out.loss.backward()
        self.opt.step()


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


def main() -> None:
    parser = common.parser(__doc__)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per method and precision")
    parser.add_argument("--batch", type=int, default=8, help="examples per step")
    parser.add_argument("--length", type=int, default=20, help="prompt length l")
    args = parser.parse_args()
    common.setup(args.threads)

    results = {"machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                           "torch": torch.__version__},
               "settings": {k: v for k, v in vars(args).items() if k != "threads"}, "matmul_gflops": {}, "precision": {}}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        results["matmul_gflops"][name] = round(matmul_gflops(dtype), 1)
    for precision in ("fp32", "bf16"):
        backbone = load_backbone(precision=precision)
        batches = real_batches(backbone, args.steps, args.batch)
        g = torch.Generator().manual_seed(0)
        init = vocab_init(backbone.embeddings, args.length, g)
        methods = {
            "mptune PT": MptuneStep(backbone, SoftPrompt(init.expand(2, -1, -1))),
            "mptune MPT": MptuneStep(backbone, MultitaskPrompt(init, 2)),
            "mptune MPT distillation": MptuneStep(backbone, MultitaskPrompt(init, 2),
                                                  teacher=SoftPrompt(init.expand(2, -1, -1))),
            "PEFT MPT": PeftStep(backbone.model, args.length, precision == "bf16"),
        }
        per_step = measure(methods, batches, args.steps)
        peak = results["matmul_gflops"][precision]
        rows = {}
        for name, sec in per_step.items():
            flops = step_flops(backbone, batches, args.length, "distillation" in name)
            rows[name] = {"seconds_per_step": round(sec, 3), "examples_per_s": round(args.batch / sec, 2),
                          "vs_peft_mpt": round(per_step["PEFT MPT"] / sec, 2),
                          "fraction_of_matmul_peak": round(flops / sec / 1e9 / peak, 3)}
        results["precision"][precision] = rows
    write(results)


def write(results: dict) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "speed.json").write_text(json.dumps(results, indent=2))
    lines = ["| precision | method | s/step | examples/s | speed vs PEFT MPT | fraction of matmul peak |",
             "|---|---|---|---|---|---|"]
    for precision, rows in results["precision"].items():
        for name, r in rows.items():
            lines.append(f"| {precision} | {name} | {r['seconds_per_step']} | {r['examples_per_s']} | "
                         f"{r['vs_peft_mpt']}x | {r['fraction_of_matmul_peak']:.0%} |")
    peaks = results["matmul_gflops"]
    lines.append(f"\nMatmul throughput measured in the same run: fp32 {peaks['fp32']} GFLOP/s, "
                 f"bf16 {peaks['bf16']} GFLOP/s ({results['machine']['threads']} threads). "
                 f"Settings: {results['settings']}.")
    (RESULTS / "speed.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
