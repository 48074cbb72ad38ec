"""Training throughput on CPU, measured from outside: `cyclip train` against OpenCLIP's own trainer
(`open_clip_train.main`) on the digits CSV, with the same model, batch size, precision and workers.

Both trainers run as whole processes, one after the other, alternating which goes first, for
`--pairs` pairs. For each run this reports the wall time of the whole process and the time from the
log line that ends the first epoch (warm-up: imports, model build, first worker start) to the line
that ends the last one, stamped as the lines arrive (`trainer_runs`); samples/s is derived from that.
The ratio is the median over pairs of OpenCLIP's time / cyclip's time, so > 1 means cyclip is faster.

    python benchmarks/train_throughput.py [--pairs 3] [--epochs 2] [--variants clip,compile,cyclip]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from trainer_runs import RunTiming, cyclip_command, openclip_command, run_timed

from cyclip.data import write_digits_demo

VARIANTS = {  # cyclip runs besides OpenCLIP: name -> extra `cyclip train` flags
    "clip": {},
    "cyclip": {"lambda_inmodal": 0.25, "lambda_crossmodal": 0.25},
    "compile": {"compile": True},
}
LABELS = {"clip": "cyclip, CLIP", "cyclip": "cyclip, CyCLIP (0.25/0.25)", "compile": "cyclip, CLIP, --compile"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="cyclip-rn-tiny", help="model name known to open_clip")
    parser.add_argument("--batch-size", type=int, default=64, help="pairs per step")
    parser.add_argument("--workers", type=int, default=2, help="data-loading processes for both trainers")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"], help="training precision")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per run (the first is the warm-up)")
    parser.add_argument("--pairs", type=int, default=3, help="alternating (cyclip, OpenCLIP) pairs of runs")
    parser.add_argument(
        "--variants", default="clip", help=f"comma-separated cyclip runs per pair: {', '.join(VARIANTS)}"
    )
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be at least 2: the first epoch is the warm-up")
    variants = args.variants.split(",")
    unknown = [name for name in variants if name not in VARIANTS]
    if unknown:
        parser.error(f"--variants: unknown {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        data = write_digits_demo(scratch / "data")
        pairs = sum(1 for _ in data.train_csv.open()) - 1
        steps_per_epoch = pairs // args.batch_size
        common = dict(
            model=args.model, batch_size=args.batch_size, workers=args.workers, precision=args.precision,
            epochs=args.epochs,
        )  # fmt: skip
        runs: dict[str, list[RunTiming]] = {name: [] for name in ["openclip", *variants]}

        def run(name: str, index: int) -> None:
            output = scratch / f"{name}-{index}"
            if name == "openclip":
                command = openclip_command(
                    data.train_csv.name, output, **common, dataset_type="csv", csv_img_key="filepath",
                    csv_caption_key="title", csv_separator=",", device="cpu",
                )  # fmt: skip
                cwd = data.train_csv.parent  # OpenCLIP opens image paths relative to the working directory
            else:
                command = cyclip_command(str(data.train_csv), output, **common, device="cpu", **VARIANTS[name])
                cwd = None
            timing = run_timed(name, command, args.batch_size, steps_per_epoch, cwd=cwd)
            runs[name].append(timing)
            print(
                f"  pair {index + 1}: {name:9s} whole run {timing.wall_seconds:6.1f} s, epochs 2-{args.epochs} "
                f"{timing.seconds_between(steps_per_epoch):6.1f} s",
                flush=True,
            )

        for index in range(args.pairs):
            order = ["openclip", *variants] if index % 2 else [*variants, "openclip"]
            for name in order:
                run(name, index)

    print()
    print(
        f"{args.model}, batch {args.batch_size}, {args.workers} workers, {args.precision}, CPU, {args.epochs} epochs "
        f"of {steps_per_epoch} steps; median of {args.pairs} alternating pairs"
    )
    print()
    print("| trainer | whole run (s) | epochs 2-E (s) | samples/s after warm-up | speed vs OpenCLIP (after warm-up) "
          "| speed vs OpenCLIP (whole run) |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    openclip = runs["openclip"]
    for name, timings in runs.items():
        ratio = statistics.median(
            o.seconds_between(steps_per_epoch) / t.seconds_between(steps_per_epoch)
            for o, t in zip(openclip, timings, strict=True)
        )
        whole = statistics.median(o.wall_seconds / t.wall_seconds for o, t in zip(openclip, timings, strict=True))
        label = "OpenCLIP (open_clip_train.main)" if name == "openclip" else LABELS[name]
        print(
            f"| {label} | {statistics.median(t.wall_seconds for t in timings):.1f} "
            f"| {statistics.median(t.seconds_between(steps_per_epoch) for t in timings):.1f} "
            f"| {statistics.median(t.samples_per_second(steps_per_epoch) for t in timings):.1f} "
            f"| {ratio:.2f}x | {whole:.2f}x |"
        )


if __name__ == "__main__":
    main()
