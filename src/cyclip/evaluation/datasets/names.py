"""Class names and prompt templates that a dataset's own files do not carry.

ImageNet names and its 80 templates come from open_clip, so that zero-shot numbers match the ones
open_clip and the CLIP paper report; the ILSVRC2012 wnids (which folder is which ImageNet index) are
the sorted public list shipped next to this module.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES, OPENAI_IMAGENET_TEMPLATES

from cyclip.prompts import DEFAULT_TEMPLATES

__all__ = [
    "CIFAR_TEMPLATES",
    "DEFAULT_TEMPLATES",
    "GTSRB_CLASSES",
    "STL10_CLASSES",
    "SVHN_CLASSES",
    "imagenet_classes",
    "imagenet_templates",
    "imagenet_wnids",
    "readable",
]

# The 18 templates the CLIP paper uses for CIFAR-10 and CIFAR-100.
CIFAR_TEMPLATES = [
    "a photo of a {}.",
    "a blurry photo of a {}.",
    "a black and white photo of a {}.",
    "a low contrast photo of a {}.",
    "a high contrast photo of a {}.",
    "a bad photo of a {}.",
    "a good photo of a {}.",
    "a photo of a small {}.",
    "a photo of a big {}.",
    "a photo of the {}.",
    "a blurry photo of the {}.",
    "a black and white photo of the {}.",
    "a low contrast photo of the {}.",
    "a high contrast photo of the {}.",
    "a bad photo of the {}.",
    "a good photo of the {}.",
    "a photo of the small {}.",
    "a photo of the big {}.",
]

# GTSRB ships class ids only (folders 00000..00042); these are the sign names of the benchmark's class ids.
GTSRB_CLASSES = [
    "speed limit (20km/h)",
    "speed limit (30km/h)",
    "speed limit (50km/h)",
    "speed limit (60km/h)",
    "speed limit (70km/h)",
    "speed limit (80km/h)",
    "end of speed limit (80km/h)",
    "speed limit (100km/h)",
    "speed limit (120km/h)",
    "no passing",
    "no passing for vehicles over 3.5 metric tons",
    "right-of-way at the next intersection",
    "priority road",
    "yield",
    "stop",
    "no vehicles",
    "vehicles over 3.5 metric tons prohibited",
    "no entry",
    "general caution",
    "dangerous curve to the left",
    "dangerous curve to the right",
    "double curve",
    "bumpy road",
    "slippery road",
    "road narrows on the right",
    "road work",
    "traffic signals",
    "pedestrians",
    "children crossing",
    "bicycles crossing",
    "beware of ice/snow",
    "wild animals crossing",
    "end of all speed and passing limits",
    "turn right ahead",
    "turn left ahead",
    "ahead only",
    "go straight or right",
    "go straight or left",
    "keep right",
    "keep left",
    "roundabout mandatory",
    "end of no passing",
    "end of no passing by vehicles over 3.5 metric tons",
]

# Used when stl10_binary/class_names.txt is absent: the names that file holds, in label order 1..10.
STL10_CLASSES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]

# SVHN's .mat files hold digits 1..10 with 10 meaning the digit 0; torchvision maps 10 to label 0.
SVHN_CLASSES = [str(digit) for digit in range(10)]


def readable(folder_name: str) -> str:
    """A folder or file-format class name as prompt text: underscores become spaces."""
    return folder_name.replace("_", " ")


@cache
def imagenet_wnids() -> tuple[str, ...]:
    """The 1000 ILSVRC2012 wnids in ImageNet index order (sorted), read from the shipped list."""
    text = files("cyclip.evaluation.datasets").joinpath("imagenet_wnids.txt").read_text(encoding="ascii")
    wnids = tuple(text.split())
    if len(wnids) != 1000 or len(set(wnids)) != 1000 or list(wnids) != sorted(wnids):
        raise RuntimeError("imagenet_wnids.txt is damaged: expected 1000 unique sorted wnids; reinstall cyclip")
    return wnids


def imagenet_classes() -> list[str]:
    """open_clip's 1000 ImageNet class names, in ImageNet index order."""
    return list(IMAGENET_CLASSNAMES)


def imagenet_templates() -> list[str]:
    """open_clip's 80 OpenAI ImageNet templates as format strings with one '{}'."""
    return [template("{}") for template in OPENAI_IMAGENET_TEMPLATES]
