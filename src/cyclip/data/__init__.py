"""Training data: image-caption pairs from CSV/TSV files or WebDataset shards (optionally with augmented views),
and the digits demo data. Evaluation datasets live in `cyclip.evaluation.datasets`."""

from cyclip.data.augment import PairAugmenter, eda
from cyclip.data.batch import PairBatch
from cyclip.data.captions import ImageCaptionDataset
from cyclip.data.digits import DIGIT_NAMES, HELDOUT_TEMPLATES, TRAIN_TEMPLATES, DigitsDemoData, write_digits_demo
from cyclip.data.images import load_rgb_image
from cyclip.data.wordnet import WordNetThesaurus

__all__ = [
    "DIGIT_NAMES",
    "HELDOUT_TEMPLATES",
    "TRAIN_TEMPLATES",
    "DigitsDemoData",
    "ImageCaptionDataset",
    "PairBatch",
    "PairAugmenter",
    "WordNetThesaurus",
    "eda",
    "load_rgb_image",
    "write_digits_demo",
]
