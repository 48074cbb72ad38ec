"""Training throughput: `cyclip train` (CLIP and CyCLIP) against OpenCLIP's own trainer
(`open_clip_train.main`) on the same CSV, model, batch size, precision and worker count.

Each trainer reports its own steady-state samples/s (data loading included) over log intervals; the
first interval (warm-up, worker start) is dropped and the median of the rest is reported.

    python benchmarks/train_throughput.py [--model cyclip-rn-tiny] [--batch-size 64] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from cyclip.data import write_digits_demo

# OpenCLIP's trainer, in a process where cyclip's bundled model configs are registered with open_clip.
OPENCLIP_MAIN = "import sys, cyclip.models; from open_clip_train.main import main; main(sys.argv[1:])"


def cyclip_samples_per_second(csv: Path, output: Path, args, lambdas: tuple[float, float]) -> float:
    command = [
        sys.executable, "-m", "cyclip", "train", "--train-data", str(csv), "--model", args.model,
        "--batch-size", str(args.batch_size), "--workers", str(args.workers), "--precision", args.precision,
        "--epochs", str(args.epochs), "--warmup", "10", "--log-every", str(args.log_every), "--output", str(output),
        "--lambda-inmodal", str(lambdas[0]), "--lambda-crossmodal", str(lambdas[1]), "--device", "cpu",
    ]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True)
    records = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    rates = [r["samples_per_second"] for r in records if r["split"] == "train"]
    return statistics.median(rates[1:])


def openclip_samples_per_second(csv: Path, output: Path, args) -> float:
    precision = {"fp32": "fp32", "bf16": "amp_bf16", "fp16": "amp"}[args.precision]
    command = [
        sys.executable, "-c", OPENCLIP_MAIN, "--train-data", csv.name, "--dataset-type", "csv",
        "--csv-img-key", "filepath", "--csv-caption-key", "title", "--csv-separator", ",", "--model", args.model,
        "--batch-size", str(args.batch_size), "--workers", str(args.workers), "--precision", precision,
        "--epochs", str(args.epochs), "--warmup", "10", "--log-every-n-steps", str(args.log_every),
        "--logs", str(output), "--name", "run", "--report-to", "", "--save-frequency", "0", "--device", "cpu",
    ]  # fmt: skip
    # OpenCLIP opens image paths relative to the working directory, so run it from the CSV's folder.
    subprocess.run(command, check=True, capture_output=True, cwd=csv.parent)
    log = (output / "run" / "out.log").read_text()
    batch_times = [float(t) for t in re.findall(r"Batch \(t\): ([\d.]+)", log)]
    return args.batch_size / statistics.median(batch_times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="cyclip-rn-tiny", help="model name known to open_clip")
    parser.add_argument("--batch-size", type=int, default=64, help="pairs per step")
    parser.add_argument("--workers", type=int, default=2, help="data-loading processes for both trainers")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"], help="training precision")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per run (2874 pairs each)")
    parser.add_argument("--log-every", type=int, default=5, help="steps per measured interval")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        data = write_digits_demo(scratch / "data")
        openclip = openclip_samples_per_second(data.train_csv, scratch / "openclip", args)
        clip = cyclip_samples_per_second(data.train_csv, scratch / "clip", args, (0.0, 0.0))
        cyclip = cyclip_samples_per_second(data.train_csv, scratch / "cyclip", args, (0.25, 0.25))

    print(f"{args.model}, batch {args.batch_size}, {args.workers} workers, {args.precision}, CPU")
    print()
    print("| trainer | samples/s | vs OpenCLIP |")
    print("|---|---|---|")
    for name, rate in (
        ("OpenCLIP (open_clip_train.main)", openclip),
        ("cyclip, CLIP", clip),
        ("cyclip, CyCLIP", cyclip),
    ):
        print(f"| {name} | {rate:.1f} | {rate / openclip:.2f}x |")
    print()
    print(f"regularizer cost per step (CyCLIP vs CLIP within cyclip): {100 * (clip / cyclip - 1):+.1f}%")


if __name__ == "__main__":
    main()
