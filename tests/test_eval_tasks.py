"""The evaluation tasks end to end: checkpoint -> embeddings -> metrics, against direct computations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from cyclip.checkpoints import save_checkpoint
from cyclip.cli import main
from cyclip.data import write_digits_demo
from cyclip.models import create_model


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Demo data cut to 60 held-out and 100 training images, and a random-weight checkpoint."""
    root = tmp_path_factory.mktemp("eval")
    data = write_digits_demo(root / "data", seed=0)
    for folder, keep in ((data.zeroshot_dir, 60), (data.probe_train_dir, 100)):
        lines = (folder / "labels.csv").read_text().splitlines()
        (folder / "labels.csv").write_text("\n".join(lines[: keep + 1]) + "\n")
    torch.manual_seed(0)
    model, _, preprocess, tokenizer = create_model("cyclip-vit-tiny")
    checkpoint = root / "model.pt"
    save_checkpoint({"model": model.state_dict(), "model_name": "cyclip-vit-tiny"}, checkpoint)
    return data, checkpoint, model.eval(), preprocess, tokenizer


@torch.no_grad()
def direct_embeddings(model, preprocess, tokenizer, folder: Path):
    """Images, captions, labels and template-averaged class embeddings, one item at a time, in float64."""
    rows = [line.split(",", 2) for line in (folder / "labels.csv").read_text().splitlines()[1:]]
    classes = json.loads((folder / "classes.json").read_text())
    images = torch.cat(
        [
            model.encode_image(preprocess(Image.open(folder / row[0]).convert("RGB"))[None], normalize=True)
            for row in rows
        ]
    ).double()
    labels = torch.tensor([int(row[1]) for row in rows])
    captions = [row[2] for row in rows] if len(rows[0]) == 3 else None
    texts = model.encode_text(tokenizer(captions), normalize=True).double() if captions else None
    class_rows = []
    for name in classes["classes"]:
        prompts = model.encode_text(tokenizer([t.format(name) for t in classes["templates"]]), normalize=True)
        mean = prompts.double().mean(0)
        class_rows.append(mean / mean.norm())
    return images, texts, labels, torch.stack(class_rows)


def run(args: list[str], capsys) -> str:
    assert main(args) == 0, capsys.readouterr().err
    return capsys.readouterr().out


def test_zeroshot_consistency_and_retrieval_match_direct_formulas(setup, tmp_path, capsys):
    data, checkpoint, model, preprocess, tokenizer = setup
    images, texts, labels, classes = direct_embeddings(model, preprocess, tokenizer, data.zeroshot_dir)
    common = ["--checkpoint", str(checkpoint), "--data", str(data.zeroshot_dir), "--workers", "0", "--device", "cpu"]

    run(["eval", "zeroshot", *common, "--output", str(tmp_path / "z.json")], capsys)
    metrics = json.loads((tmp_path / "z.json").read_text())["metrics"]
    ranks = (images @ classes.T).argsort(dim=1, descending=True)
    for k in (1, 3, 5, 10):
        expected = sum(int(labels[i] in ranks[i, :k]) for i in range(len(labels))) / len(labels)
        assert metrics[f"top{k}"] == pytest.approx(expected, abs=1e-12)

    run(["eval", "consistency", *common, "--output", str(tmp_path / "c.json")], capsys)
    metrics = json.loads((tmp_path / "c.json").read_text())["metrics"]
    n = len(labels)
    inmodal = sum(
        abs(images[j] @ images[k] - texts[j] @ texts[k]).item() for j in range(n) for k in range(n) if j != k
    ) / (n * (n - 1))
    assert metrics["inmodal_gap"] == pytest.approx(inmodal, rel=1e-5)
    caption_class = (texts @ classes.T).argmax(1)
    consistent = sum(int(caption_class[i] in ranks[i, :3]) for i in range(n)) / n
    assert metrics["consistency@3"] == pytest.approx(consistent, abs=1e-12)

    # The held-out images as a retrieval CSV, one caption each, numbered so that no two captions tie.
    retrieval_csv = tmp_path / "pairs.csv"
    rows = [line.split(",", 2) for line in (data.zeroshot_dir / "labels.csv").read_text().splitlines()[1:]]
    captions = [f"{row[2]} number {i}" for i, row in enumerate(rows)]
    retrieval_csv.write_text(
        "filepath,title\n" + "".join(f"{data.zeroshot_dir / r[0]},{c}\n" for r, c in zip(rows, captions, strict=True)),
        encoding="utf-8",
    )
    texts = model.encode_text(tokenizer(captions), normalize=True).double()
    common_retrieval = ["--checkpoint", str(checkpoint), "--data", str(retrieval_csv), "--workers", "0"]
    run(["eval", "retrieval", *common_retrieval, "--output", str(tmp_path / "r.json")], capsys)
    metrics = json.loads((tmp_path / "r.json").read_text())["metrics"]
    similarity = images @ texts.T
    image_rank = (similarity > similarity.diagonal()[:, None]).sum(1)  # texts scoring above the true one
    text_rank = (similarity.T > similarity.diagonal()[:, None]).sum(1)
    for k in (1, 5, 10):
        assert metrics[f"image_to_text_R@{k}"] == pytest.approx((image_rank < k).double().mean().item(), abs=1e-12)
        assert metrics[f"text_to_image_R@{k}"] == pytest.approx((text_rank < k).double().mean().item(), abs=1e-12)


def test_embeddings_file_gives_the_same_metrics_without_the_model(setup, tmp_path, capsys):
    data, checkpoint, *_ = setup
    base = ["--workers", "0", "--device", "cpu"]
    model_args = ["--checkpoint", str(checkpoint), "--data", str(data.zeroshot_dir), *base]
    run(["eval", "embed", *model_args, "--output", str(tmp_path / "test.npz")], capsys)
    probe_args = ["--checkpoint", str(checkpoint), "--data", str(data.probe_train_dir), *base]
    run(["eval", "embed", *probe_args, "--output", str(tmp_path / "train.npz")], capsys)
    for task in ("zeroshot", "consistency", "geometry"):
        run(["eval", task, *model_args, "--output", str(tmp_path / f"{task}-model.json")], capsys)
        run(
            ["eval", task, "--embeddings", str(tmp_path / "test.npz"), "--output", str(tmp_path / f"{task}.json")],
            capsys,
        )
        from_model = json.loads((tmp_path / f"{task}-model.json").read_text())["metrics"]
        from_file = json.loads((tmp_path / f"{task}.json").read_text())["metrics"]
        assert from_file == pytest.approx(from_model, rel=1e-6), task
    probe = ["eval", "linear-probe", "--embeddings", str(tmp_path / "test.npz")]
    run([*probe, "--train-embeddings", str(tmp_path / "train.npz"), "--output", str(tmp_path / "p.json")], capsys)
    score = json.loads((tmp_path / "p.json").read_text())["metrics"]["score"]
    assert 0.0 <= score <= 1.0


def test_suite_writes_one_json_and_markdown_and_records_failures(setup, tmp_path, capsys):
    data, checkpoint, *_ = setup
    config = tmp_path / "eval.yaml"
    config.write_text(
        f"workers: 0\ndevice: cpu\ntasks:\n"
        f"  - {{task: zeroshot, data: {data.zeroshot_dir}, name: zeroshot/digits}}\n"
        f"  - {{task: granularity, data: {data.zeroshot_dir}, superclasses: {data.superclasses}}}\n"
        f"  - {{task: zeroshot, data: {tmp_path / 'missing'}, name: zeroshot/missing}}\n"
    )
    command = ["eval", "suite", "--config", str(config), "--checkpoint", str(checkpoint)]
    output = run(command, capsys)
    results = json.loads((checkpoint.parent / "eval-eval.json").read_text())  # named after the suite file
    assert results["model"] == "cyclip-vit-tiny"
    assert set(results["tasks"]) == {"zeroshot/digits", "granularity/zeroshot", "zeroshot/missing"}
    assert (
        "error" in results["tasks"]["zeroshot/missing"] and "missing" in results["tasks"]["zeroshot/missing"]["error"]
    )
    assert results["tasks"]["granularity/zeroshot"]["metrics"]["coarse_top1"] >= 0
    assert (checkpoint.parent / "eval-eval.md").is_file() and "zeroshot/digits" in output

    assert main(command) == 2  # never replaces results silently, and says so before evaluating
    assert capsys.readouterr().err == (
        f"cyclip: error: {checkpoint.parent / 'eval-eval.json'}: exists; pass --overwrite to replace it, "
        "or --output another file\n"
    )
    (checkpoint.parent / "eval-eval.json").unlink()
    assert main(command) == 2 and "eval-eval.md: exists" in capsys.readouterr().err
    run([*command, "--overwrite"], capsys)
    assert json.loads((checkpoint.parent / "eval-eval.json").read_text())["tasks"].keys() == results["tasks"].keys()


def test_bad_suite_config_is_one_line(tmp_path, capsys):
    config = tmp_path / "eval.yaml"
    config.write_text("tasks:\n  - {task: zeroshot, dataa: x}\n")
    assert main(["eval", "suite", "--config", str(config), "--checkpoint", "x.pt"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "unknown key(s) dataa" in error


def test_every_registered_task_is_a_command_and_part_of_the_demo(tmp_path):
    from cyclip.cli import build_parser
    from cyclip.demo import evaluation_tasks
    from cyclip.evaluation.tasks import TASKS

    parser = build_parser()
    for name, task in TASKS.items():
        required = [argument for option in task.required for argument in ("--" + option.replace("_", "-"), "x")]
        args = parser.parse_args(["eval", name, "--embeddings", "e.npz", *required])
        assert args.task == name and args.handler.__name__ == "_run_task"
    specs = evaluation_tasks(write_digits_demo(tmp_path / "data", seed=0))
    assert [spec.task for spec in specs] == list(TASKS)
    assert {spec.label for spec in specs} >= {"zeroshot/digits", "linear-probe/digits", "consistency/digits"}


def test_suite_flags_override_the_file_which_overrides_the_defaults():
    from cyclip.cli import build_parser
    from cyclip.cli.evaluate import _settings
    from cyclip.evaluation.settings import EvalConfig

    file_values = {"device": "cpu", "batch_size": 9, "workers": 0}
    given = build_parser().parse_args(["eval", "suite", "--config", "s.yaml", "--batch-size", "7", "--device", "cuda"])
    assert _settings(given, file_values) == EvalConfig(device="cuda", batch_size=7, workers=0)
    plain = build_parser().parse_args(["eval", "suite", "--config", "s.yaml"])
    assert _settings(plain, {"workers": 0}) == EvalConfig(device="auto", batch_size=256, workers=0)
    assert _settings(plain) == EvalConfig()


def test_bad_run_settings_in_a_suite_file_are_one_line(tmp_path, capsys):
    config = tmp_path / "eval.yaml"
    config.write_text(f"batch_size: many\ntasks:\n  - {{task: zeroshot, data: {tmp_path}}}\n")
    assert main(["eval", "suite", "--config", str(config), "--checkpoint", "x.pt"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "eval.yaml: batch_size must be an integer of at least 1, got 'many'" in error


def test_few_shot_seed_chooses_the_draws(tmp_path, monkeypatch):
    from cyclip.cli import build_parser
    from cyclip.cli.evaluate import _spec
    from cyclip.evaluation import tasks
    from cyclip.evaluation.embeddings_file import save_embeddings

    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(3).repeat(16)
    save_embeddings(tmp_path / "e.npz", image_embeddings=torch.randn(48, 4, generator=generator), labels=labels)
    seen = []

    def record(train_x, train_y, test_x, test_y, seeds, **options):
        seen.append(list(seeds))
        return {"shots": {1: {"mean": 0.5, "std": 0.0}}}

    monkeypatch.setattr(tasks, "few_shot_probe", record)
    command = [
        "eval",
        "few-shot",
        "--embeddings",
        str(tmp_path / "e.npz"),
        "--train-embeddings",
        str(tmp_path / "e.npz"),
    ]
    for extra, seeds in (([], [0, 1, 2]), (["--seed", "5"], [5, 6, 7])):
        assert tasks.run_task(_spec(build_parser().parse_args([*command, *extra]))) == {"1": {"mean": 0.5, "std": 0.0}}
        assert seen.pop() == seeds
