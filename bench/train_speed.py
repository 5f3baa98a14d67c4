"""Training speed of every registered net: images/s for fp32 vs bf16 autocast, NCHW vs channels_last.

    python bench/train_speed.py                       # all nets, 3 timed steps per cell
    python bench/train_speed.py --models seed-cnn-small,mlp --steps 5 --threads 2

One cell = one full training step (forward, soft cross-entropy, backward, Adam step) on a batch of
48x48 faces, after `--warmup` untimed steps; augmentation and data loading are not included. A cell
stops early once it has used `--budget` seconds (at least one timed step), so a slow setting, such as
bf16 on a CPU without native bf16, does not hold the table up.

On CPUs without AMX or AVX512-BF16 (e.g. AVX2-only AMD EPYC) torch emulates bf16 and autocast runs
many times slower than fp32; `ferkit train --precision auto` therefore picks fp32 there. The table
shows that figure as measured; the header says what `auto` picks on this machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import nullcontext

import torch

from ferkit.models import count_parameters, create_model, list_models
from ferkit.train.device import cpu_has_fast_bf16, pick_device, uses_bf16
from ferkit.train.losses import soft_cross_entropy
from ferkit.train.provenance import hardware

VARIANTS = {  # name -> (bf16 autocast, channels_last)
    "fp32": (False, False),
    "fp32+cl": (False, True),
    "bf16": (True, False),
    "bf16+cl": (True, True),
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(name: str, bf16: bool, channels_last: bool, device: torch.device, batch: int, steps: int, warmup: int,
            budget: float, classes: int = 7) -> dict:
    torch.manual_seed(0)
    model = create_model(name, classes).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=5e-4)
    x = torch.randn(batch, 1, 48, 48, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.nn.functional.one_hot(torch.randint(0, classes, (batch,)), classes).float().to(device)
    ctx = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bf16 else nullcontext

    def step() -> None:
        with ctx():
            logits = model(x)
        loss = soft_cross_entropy(logits, y, 0.0, None)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    t_start = time.perf_counter()
    for _ in range(warmup):
        step()
        if time.perf_counter() - t_start > budget:
            break
    sync(device)
    done, t0 = 0, time.perf_counter()
    while done < steps:
        step()
        sync(device)
        done += 1
        if time.perf_counter() - t0 > budget:
            break
    elapsed = time.perf_counter() - t0
    return {"model": name, "bf16": bf16, "channels_last": channels_last, "steps": done, "batch": batch,
            "seconds": round(elapsed, 3), "images_per_s": round(batch * done / elapsed, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(list_models()), help="comma-separated registered nets (default: all)")
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    ap.add_argument("--steps", type=int, default=3, help="timed training steps per cell")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--budget", type=float, default=30.0, help="seconds at most per cell (after one timed step)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [m for m in models if m not in list_models()] + [v for v in variants if v not in VARIANTS]
    if unknown:
        print(f"error: unknown model or variant: {', '.join(unknown)} (models: {', '.join(list_models())}; "
              f"variants: {', '.join(VARIANTS)})", file=sys.stderr)
        return 2
    auto = "bf16" if uses_bf16(device, "auto") else "fp32"
    native = cpu_has_fast_bf16() if device.type == "cpu" else None
    print(f"# {hardware(device)}; torch {torch.__version__}; batch {args.batch}; {args.steps} timed steps "
          f"(budget {args.budget:g} s) after {args.warmup} warm-up")
    if device.type == "cpu":
        print(f"# native bf16 on this CPU (AMX / AVX512-BF16): {'yes' if native else 'no'}; "
              f"`ferkit train --precision auto` uses {auto} here")
    cols = variants + (["bf16 vs fp32"] if "fp32" in variants and "bf16" in variants else [])
    header = f"{'model':16s} {'params':>11s} " + " ".join(f"{c:>13s}" for c in cols)
    print(header + "\n" + "-" * len(header))
    results = []
    for name in models:
        cells = {}
        for v in variants:
            bf16, cl = VARIANTS[v]
            r = measure(name, bf16, cl, device, args.batch, args.steps, args.warmup, args.budget)
            r["variant"] = v
            results.append(r)
            cells[v] = r["images_per_s"]
        row = [f"{cells[v]:>9,.1f} i/s" for v in variants]
        if "bf16 vs fp32" in cols:
            row.append(f"{cells['bf16'] / cells['fp32']:>12.2f}x")
        print(f"{name:16s} {count_parameters(create_model(name, 7)):>11,d} " + " ".join(f"{c:>13s}" for c in row),
              flush=True)
    print("# i/s = training images per second (forward + backward + Adam step); cl = channels_last")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"hardware": hardware(device), "torch": torch.__version__, "auto_precision": auto,
                       "native_bf16": native, "results": results}, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
