"""The caption language of the shapes world: what the world CLIP is trained to read.

Every render of ``datamodules/world.py`` gets a caption built from its true factors: the shape's
name, a colour name from its hue (twelve names, one per 30 degrees of hue), a size word from
its scale (thirds of [0, 1]), a position phrase from x and y (thirds of each axis), and for a
square or a triangle how far it is turned. Training captions vary: each attribute is left out
with some probability (an empty caption is "a shape", the neutral prompt of StyleCLIP), words
have synonyms and the phrase order follows one of several templates, so that a short prompt
("a red shape", "a circle", "a shape on the left") lands near every image it describes.

The vocabulary is closed: ``VOCABULARY`` holds every word a caption can contain, plus a few
words of prompts (articles, "photo", "image"); the tokenizer maps comparatives to their
adjective ("larger" -> "large") and any other word to ``<unk>``.
"""
from __future__ import annotations

import re
from typing import Sequence

import torch

from datamodules.world import SHAPES

# One colour name per 30 degrees of hue, starting at red (hue 0).
COLOURS: tuple[str, ...] = ("red", "orange", "yellow", "lime", "green", "mint", "cyan", "azure",
                            "blue", "purple", "magenta", "pink")
SIZES: tuple[str, ...] = ("small", "medium", "large")
SIZE_WORDS: dict[str, tuple[str, ...]] = {"small": ("small", "little", "tiny"),
                                          "medium": ("medium", "medium sized", "mid sized"),
                                          "large": ("large", "big", "huge")}
COLUMNS: tuple[str, ...] = ("left", "centre", "right")
ROWS: tuple[str, ...] = ("top", "middle", "bottom")
TURNS: tuple[str, ...] = ("upright", "turned a little", "turned a lot")
SHAPE_WORDS: dict[str, tuple[str, ...]] = {"square": ("square",), "circle": ("circle", "disc"),
                                           "triangle": ("triangle",)}
GENERIC_NOUNS: tuple[str, ...] = ("shape", "object", "figure")
# Words a prompt may use that captions do not; comparatives read as their adjective.
PROMPT_WORDS: tuple[str, ...] = ("photo", "image", "picture", "of", "the", "an", "with", "and",
                                 "more", "further", "very", "colour", "coloured", "size", "position", "side", "towards",
                                 "rotated", "tilted", "sized")
LEMMAS: dict[str, str] = {"larger": "large", "bigger": "big", "smaller": "small", "tinier": "tiny",
                          "redder": "red", "bluer": "blue", "greener": "green", "center": "centre",
                          "color": "colour", "colored": "coloured", "leftmost": "left", "rightmost": "right",
                          "higher": "top", "lower": "bottom", "circular": "circle",
                          "squares": "square", "circles": "circle", "triangles": "triangle",
                          "shapes": "shape", "upper": "top"}
SPECIALS: tuple[str, ...] = ("<pad>", "<unk>", "<bos>")

_TEMPLATES = ("{det} {desc} {position} {turn}", "{position} there is {det} {desc} {turn}",
              "{det} {desc} {turn} {position}", "{det} picture of {det2} {desc} {position} {turn}")


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


def _build_vocabulary() -> tuple[str, ...]:
    words: list[str] = []
    phrases = [*COLOURS, *(w for ws in SIZE_WORDS.values() for w in ws), *COLUMNS, *ROWS, *TURNS,
               *(w for ws in SHAPE_WORDS.values() for w in ws), *GENERIC_NOUNS, *PROMPT_WORDS,
               *(t for t in _TEMPLATES), "a", "in", "at", "on", "near", "there", "is", "middle"]
    for phrase in phrases:
        for word in _words(phrase.replace("{", " ").replace("}", " ")):
            if word not in words and word not in ("det", "desc", "position", "turn"):
                words.append(word)
    for word in ("position", "turn"):
        if word not in words:
            words.append(word)
    return SPECIALS + tuple(words)


VOCABULARY: tuple[str, ...] = _build_vocabulary()


def colour_index(hue: torch.Tensor) -> torch.Tensor:
    """The index in ``COLOURS`` of hues in [0, 1) (nearest of the twelve names)."""
    return torch.round(hue * len(COLOURS)).long() % len(COLOURS)


def third(value: torch.Tensor) -> torch.Tensor:
    """0, 1 or 2: the third of [0, 1] a value falls in."""
    return (value * 3).floor().long().clamp(0, 2)


def turn_index(rotation: torch.Tensor) -> torch.Tensor:
    """0 upright, 1 turned a little, 2 turned a lot, from the fraction of the symmetry period."""
    away = torch.minimum(rotation % 1.0, 1.0 - rotation % 1.0)  # 0 .. 0.5
    return (away >= 0.1).long() + (away >= 0.3).long()


def position_phrase(column: int, row: int, choice: int = 0) -> str:
    """"in the top left", "on the left", "at the top", "in the centre" ..."""
    if column == 1 and row == 1:
        return ("in the centre", "in the middle")[choice % 2]
    if column == 1:
        return f"at the {ROWS[row]}"
    if row == 1:
        return f"on the {COLUMNS[column]}"
    return f"{('in', 'near')[choice % 2]} the {ROWS[row]} {COLUMNS[column]}"


def describe(factors: torch.Tensor, generator: torch.Generator | None = None,
             keep: float = 0.7, full: bool = False) -> list[str]:
    """One caption per row of world factors ``N x 6``.

    Args:
        factors: the world's factors (``datamodules.world.FACTORS`` order).
        generator: the randomness of the variations (which attributes, synonyms, template).
        keep: the probability that each attribute is mentioned (the shape's name: its own
            probability is the same); ``full=True`` mentions every attribute in the first
            template with the first synonyms (the evaluation's captions).
    """
    n = factors.shape[0]
    shape = factors[:, 0].round().long().clamp(0, len(SHAPES) - 1)
    size, column, row = third(factors[:, 1]), third(factors[:, 3]), third(factors[:, 4])
    colour, turns = colour_index(factors[:, 5]), turn_index(factors[:, 2])
    if full:
        mention = torch.ones(n, 5, dtype=torch.bool)
        choices = torch.zeros(n, 6, dtype=torch.long)
    else:
        mention = torch.rand(n, 5, generator=generator) < keep
        choices = torch.randint(0, 1 << 16, (n, 6), generator=generator)
    captions = []
    for i in range(n):
        m, c = mention[i].tolist(), choices[i].tolist()
        shape_name = SHAPES[int(shape[i])]
        noun = (SHAPE_WORDS[shape_name][c[0] % len(SHAPE_WORDS[shape_name])] if m[0]
                else GENERIC_NOUNS[c[0] % len(GENERIC_NOUNS)])
        words = []
        if m[1]:
            sizes = SIZE_WORDS[SIZES[int(size[i])]]
            words.append(sizes[c[1] % len(sizes)])
        if m[2]:
            words.append(COLOURS[int(colour[i])])
        desc = " ".join([*words, noun])
        position = position_phrase(int(column[i]), int(row[i]), c[2]) if m[3] else ""
        turn = ""
        if m[4] and shape_name != "circle":
            turn = TURNS[int(turns[i])]
        template = _TEMPLATES[0] if full else _TEMPLATES[c[3] % len(_TEMPLATES)]
        if not position and "there is" in template:
            template = _TEMPLATES[0]
        det = "an" if desc[0] in "aeiou" else "a"
        text = template.format(det=det, det2=det, desc=desc, position=position, turn=turn)
        captions.append(" ".join(text.split()))
    return captions


def satisfies(caption: str, factors: torch.Tensor) -> torch.Tensor:
    """Which rows of ``factors`` a ``full`` caption describes (every attribute it names)."""
    return torch.tensor([caption == text for text in describe(factors, full=True)])


# Zero-shot classification: one prompt per class of each evaluated attribute.
def zero_shot_prompts() -> dict[str, list[str]]:
    """The class prompts of the zero-shot figures: shape, colour name, size and quadrant."""
    return {
        "shape": [f"a {s}" for s in SHAPES],
        "colour": [f"a {c} shape" for c in COLOURS],
        "size": [f"a {s} shape" for s in SIZES],
        "quadrant": [f"a shape in the {r} {c}" for r in ("top", "bottom") for c in ("left", "right")],
    }


def zero_shot_labels(factors: torch.Tensor) -> dict[str, torch.Tensor]:
    """The true class of each zero-shot attribute (``-1`` where the image has none: a quadrant
    is only asked of images in the outer thirds of both axes, where the captions name it)."""
    column, row = third(factors[:, 3]), third(factors[:, 4])
    outer = (column != 1) & (row != 1)
    quadrant = torch.where(outer, (row // 2) * 2 + column // 2, torch.full_like(row, -1))
    return {"shape": factors[:, 0].round().long(), "colour": colour_index(factors[:, 5]),
            "size": third(factors[:, 1]), "quadrant": quadrant}


class WordTokenizer:
    """Lower-case words to indices of a closed vocabulary: ``<bos>`` first, ``<pad>`` after the
    last word, comparatives read through ``LEMMAS``, unknown words as ``<unk>``.

    Args:
        vocabulary: the words, ``SPECIALS`` first (a weights file stores its own).
        context: tokens per text (``<bos>`` included); longer texts are cut.
    """

    def __init__(self, vocabulary: Sequence[str] = VOCABULARY, context: int = 24) -> None:
        if tuple(vocabulary[:len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"a vocabulary starts with {SPECIALS}")
        self.vocabulary = tuple(vocabulary)
        self.context = context
        self.index = {w: i for i, w in enumerate(self.vocabulary)}

    def words(self, text: str) -> list[str]:
        return [LEMMAS.get(w, w) for w in _words(text)]

    def unknown(self, text: str) -> list[str]:
        """The words of ``text`` the vocabulary does not hold (read as ``<unk>``)."""
        return [w for w in self.words(text) if w not in self.index]

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        tokens = torch.zeros(len(texts), self.context, dtype=torch.long)
        unk, bos = self.index["<unk>"], self.index["<bos>"]
        for i, text in enumerate(texts):
            ids = [bos] + [self.index.get(w, unk) for w in self.words(text)]
            ids = ids[:self.context]
            tokens[i, :len(ids)] = torch.tensor(ids)
        return tokens
