"""Augmented views of an image-caption pair, for the in-modal contrastive terms (the paper's `--inmodal` mode).

Captions are augmented with EDA (Wei & Zou, 2019) as the CyCLIP authors' code calls it: the caption is
lower-cased and reduced to the letters a-z, then ONE of synonym replacement, random insertion, random swap
or random deletion (chosen uniformly) is applied with alpha = 0.1. Images go through torchvision's
AutoAugment with the ImageNet policy (the authors' choice) or RandAugment.

Synonyms come from WordNet 3.0, read offline by `cyclip.data.wordnet`; nothing is ever downloaded. Without
it, captions get only random swap and random deletion, the two operations that need no thesaurus, and a
warning says so once.

All randomness comes from Python's global `random` (text) and torch's global generator (images), which
`cyclip.data.seeding.seeded_randomness` seeds per sample, so an augmented pair depends on
(seed, epoch, sample) only: a new view every epoch. (The authors' code draws a new image view per access
but augments each caption once, when the dataset is built.)
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Literal

import torchvision.transforms as T
from PIL import Image

from cyclip.config import IMAGE_AUGMENTATIONS
from cyclip.data.wordnet import default_thesaurus

Thesaurus = Callable[[str], Sequence[str]]
EDA_ALPHA = 0.1  # alpha_sr = alpha_ri = alpha_rs = p_rd = 0.1 in the authors' code
INSERTION_TRIES = 10  # random insertion gives up on a word after this many picks without synonyms

# EDA's stop words: never replaced by a synonym.
STOP_WORDS = frozenset(
    """i me my myself we our ours ourselves you your yours yourself yourselves he him his himself she her hers
    herself it its itself they them their theirs themselves what which who whom this that these those am is are
    was were be been being have has had having do does did doing a an the and but if or because as until while
    of at by for with about against between into through during before after above below to from up down in out
    on off over under again further then once here there when where why how all any both each few more most
    other some such no nor not only own same so than too very s t can will just don should now""".split()
)


def _resolve_thesaurus(thesaurus: Thesaurus | Literal["wordnet"] | None) -> Thesaurus | None:
    if thesaurus == "wordnet":
        return default_thesaurus()
    if thesaurus is not None and not callable(thesaurus):
        raise ValueError(f"thesaurus must be 'wordnet', None or a function word -> synonyms, got {thesaurus!r}")
    return thesaurus


# ------------------------------------------------------------------------------------------- EDA


def _only_letters(text: str) -> str:
    return "".join(char if "a" <= char <= "z" or char == " " else " " for char in text.lower())


def caption_words(caption: str) -> list[str]:
    """EDA's cleaning: apostrophes dropped, hyphens and anything but the letters a-z made spaces, lower case."""
    text = caption.replace("\u2019", "").replace("'", "").replace("-", " ")
    return _only_letters(text).split()


def synonym_replacement(words: Sequence[str], rng: random.Random, n: int, thesaurus: Thesaurus) -> list[str]:
    """Replace every occurrence of up to `n` distinct non-stop words (taken in random order) by one random
    synonym each; words without synonyms are passed over. Multi-word synonyms become several words."""
    candidates = sorted({word for word in words if word not in STOP_WORDS})
    rng.shuffle(candidates)
    replacements: dict[str, str] = {}
    for word in candidates:
        if len(replacements) >= n:
            break
        synonyms = thesaurus(word)
        if synonyms:
            replacements[word] = rng.choice(list(synonyms))
    return " ".join(replacements.get(word, word) for word in words).split()


def random_insertion(words: Sequence[str], rng: random.Random, n: int, thesaurus: Thesaurus) -> list[str]:
    """`n` times: insert a random synonym of a random word before a random word. Each insertion tries up to
    ten random words for one with synonyms and is skipped if none has any."""
    new_words = list(words)
    for _ in range(n if new_words else 0):
        for _ in range(INSERTION_TRIES):
            synonyms = thesaurus(rng.choice(new_words))
            if synonyms:
                position = rng.randrange(len(new_words))
                new_words[position:position] = rng.choice(list(synonyms)).split()
                break
    return new_words


def random_swap(words: Sequence[str], rng: random.Random, n: int) -> list[str]:
    """`n` times: swap the words at two distinct random positions (nothing to do with fewer than two words)."""
    new_words = list(words)
    if len(new_words) >= 2:
        for _ in range(n):
            first, second = rng.sample(range(len(new_words)), 2)
            new_words[first], new_words[second] = new_words[second], new_words[first]
    return new_words


def random_deletion(words: Sequence[str], rng: random.Random, p: float) -> list[str]:
    """Delete each word with probability `p`; a one-word caption is kept, and if every word went, one random
    word of the caption is returned, so a non-empty caption never becomes empty."""
    if len(words) <= 1:
        return list(words)
    kept = [word for word in words if rng.random() > p]
    return kept or [rng.choice(list(words))]


def eda(
    caption: str,
    alpha: float = EDA_ALPHA,
    rng: random.Random | None = None,
    thesaurus: Thesaurus | Literal["wordnet"] | None = "wordnet",
) -> str:
    """One EDA-augmented caption: cleaned as EDA does, then one operation chosen uniformly at random.

    Replacement, insertion and swap act on max(1, int(alpha * words)) words; deletion drops each word with
    probability alpha. `rng=None` draws from Python's global `random`. `thesaurus="wordnet"` uses WordNet
    if installed; with no thesaurus (None, or WordNet missing) the choice is between swap and deletion. A
    caption with no letters a-z is returned unchanged.
    """
    if not 0 < alpha <= 1:
        raise ValueError(f"alpha must be in (0, 1], got {alpha}")
    thesaurus = _resolve_thesaurus(thesaurus)
    rng = rng if rng is not None else random.Random(random.getrandbits(64))
    words = caption_words(caption)
    if not words:
        return caption
    count = max(1, int(alpha * len(words)))
    operations: list[Callable[[], list[str]]] = [
        lambda: random_swap(words, rng, count),
        lambda: random_deletion(words, rng, alpha),
    ]
    if thesaurus is not None:
        operations = [
            lambda: synonym_replacement(words, rng, count, thesaurus),
            lambda: random_insertion(words, rng, count, thesaurus),
            *operations,
        ]
    return " ".join(rng.choice(operations)())


# ------------------------------------------------------------------------------------------- pairs


class PairAugmenter:
    """`augmenter(image, caption) -> (augmented image, augmented caption)` for the in-modal terms.

    image_policy: "autoaugment" (torchvision's AutoAugment, ImageNet policy: the authors' choice),
    "randaugment" (torchvision's defaults: 2 ops, magnitude 9) or "none". text: EDA on the caption or
    the caption unchanged. Images draw from torch's global generator, captions from Python's `random`.
    """

    def __init__(
        self,
        image_policy: str = "autoaugment",
        text: bool = True,
        alpha: float = EDA_ALPHA,
        thesaurus: Thesaurus | Literal["wordnet"] | None = "wordnet",
    ) -> None:
        if image_policy not in IMAGE_AUGMENTATIONS:
            raise ValueError(f"image_policy must be one of {', '.join(IMAGE_AUGMENTATIONS)}, got {image_policy!r}")
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        self.image_policy = image_policy
        self.text = text
        self.alpha = alpha
        self.thesaurus = _resolve_thesaurus(thesaurus) if text else None
        self._image_transform: Callable[[Image.Image], Image.Image] | None = {
            "autoaugment": lambda: T.AutoAugment(T.AutoAugmentPolicy.IMAGENET),
            "randaugment": lambda: T.RandAugment(),
            "none": lambda: None,
        }[image_policy]()

    def __repr__(self) -> str:
        return (
            f"PairAugmenter(image_policy={self.image_policy!r}, text={self.text}, alpha={self.alpha}, "
            f"thesaurus={self.thesaurus!r})"
        )

    def __call__(self, image: Image.Image, caption: str) -> tuple[Image.Image, str]:
        if not isinstance(image, Image.Image):
            raise ValueError(f"PairAugmenter expects a PIL image, got {type(image).__name__}")
        augmented_image = self._image_transform(image) if self._image_transform is not None else image
        augmented_caption = eda(caption, self.alpha, None, self.thesaurus) if self.text else caption
        return augmented_image, augmented_caption
