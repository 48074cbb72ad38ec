"""`cyclip export`: write a checkpoint's model as an open_clip `local-dir:` folder, and say how to load it."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a checkpoint for OpenCLIP (local-dir: folder)",
        description="Write the model of a cyclip checkpoint as an OpenCLIP 'local-dir:' folder: "
        "open_clip_config.json (architecture and preprocessing) and open_clip_model.safetensors (weights).",
    )
    parser.add_argument("--checkpoint", required=True, help="a cyclip checkpoint (e.g. OUTPUT/latest.pt)")
    parser.add_argument("--output", required=True, help="folder to write; it must not exist or be empty")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing folder that holds a previous export"
    )
    parser.set_defaults(handler=_run_export)


def _run_export(args: argparse.Namespace) -> None:
    from cyclip.export import export_open_clip

    folder = export_open_clip(args.checkpoint, args.output, overwrite=args.overwrite)
    print(f"exported {args.checkpoint} to {folder}/")
    print(f'  OpenCLIP: open_clip.create_model_and_transforms("local-dir:{folder}")')
    print(f'  cyclip:   create_model("local-dir:{folder}"), or cyclip train --model local-dir:{folder}')
