"""Datasets: image-caption CSV/TSV files (optionally with augmented views), labelled evaluation folders, and the
digits demo data."""

from cyclip.data.augment import PairAugmenter, WordNetThesaurus, eda
from cyclip.data.captions import ImageCaptionDataset
from cyclip.data.digits import DIGIT_NAMES, HELDOUT_TEMPLATES, TRAIN_TEMPLATES, DigitsDemoData, write_digits_demo
from cyclip.data.images import BadSampleError, DataError, ImageTooLargeError, load_rgb_image
from cyclip.data.labelled import LabelledImageDataset, LabelledImages, read_labelled_folder

__all__ = [
    "DIGIT_NAMES",
    "HELDOUT_TEMPLATES",
    "TRAIN_TEMPLATES",
    "BadSampleError",
    "DataError",
    "DigitsDemoData",
    "ImageTooLargeError",
    "ImageCaptionDataset",
    "LabelledImageDataset",
    "LabelledImages",
    "PairAugmenter",
    "WordNetThesaurus",
    "eda",
    "load_rgb_image",
    "read_labelled_folder",
    "write_digits_demo",
]
