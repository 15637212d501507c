"""Short film reviews made by this script (no download), their vocabulary, and token ids.

Reviews are drawn from templates with words of a positive or a negative class, so a bag of
words model can learn them in seconds; each review is tokenised exactly as the handler does
(``\\w+|[^\\w\\s]``, lowercased), so training sees the ids a served request becomes.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

LABELS = ["negative", "positive"]
UNK, PAD = "<unk>", "<pad>"
# The handler's tokeniser (handlers/tasks/text.py: TOKEN); a test checks they are the same.
TOKEN = re.compile(r"\w+|[^\w\s]")

POSITIVE = [
    "good", "great", "wonderful", "excellent", "brilliant", "lovely", "superb", "enjoyable",
    "delightful", "fantastic", "charming", "moving", "gripping", "beautiful", "funny", "clever",
]  # fmt: skip
NEGATIVE = [
    "bad", "awful", "terrible", "boring", "dull", "poor", "dreadful", "weak", "tedious",
    "horrible", "clumsy", "bland", "messy", "annoying", "lifeless", "predictable",
]  # fmt: skip
NOUNS = [
    "film", "movie", "plot", "story", "acting", "cast", "script", "ending", "soundtrack",
    "direction", "dialogue", "pacing",
]  # fmt: skip
ADVERBS = ["very", "really", "truly", "quite", "so", "rather", "simply", "just"]
TEMPLATES = [
    "the {noun} was {adverb} {adjective} .",
    "what a {adjective} {noun} !",
    "i found the {noun} {adjective} and {other} .",
    "{adjective} , {adverb} {other} {noun}",
    "this {noun} is {adjective}",
    "overall the {noun} felt {adverb} {adjective} , and the {noun2} was {other} !",
    "{adjective}",
    "a {adverb} {adjective} {noun} with a {other} {noun2} .",
]
SEED = 0


@dataclass(frozen=True)
class Split:
    """Reviews and their labels (0 negative, 1 positive), for training and held out."""

    train_texts: list[str]
    train_labels: list[int]
    test_texts: list[str]
    test_labels: list[int]


def tokenize(text: str) -> list[str]:
    return TOKEN.findall(text.lower())


def make_reviews(count: int, rng: random.Random) -> tuple[list[str], list[int]]:
    texts, labels = [], []
    for _ in range(count):
        label = rng.randrange(2)
        words = POSITIVE if label else NEGATIVE
        first, second = rng.sample(words, 2)
        noun, noun2 = rng.sample(NOUNS, 2)
        text = rng.choice(TEMPLATES).format(
            noun=noun, noun2=noun2, adverb=rng.choice(ADVERBS), adjective=first, other=second
        )
        texts.append(text.capitalize())
        labels.append(label)
    return texts, labels


def load_split(train: int = 2000, test: int = 400) -> Split:
    """The same reviews on every call (seeded)."""
    rng = random.Random(SEED)
    train_texts, train_labels = make_reviews(train, rng)
    test_texts, test_labels = make_reviews(test, rng)
    return Split(train_texts, train_labels, test_texts, test_labels)


def build_vocab(texts: list[str]) -> dict[str, int]:
    """Token -> id: ``<unk>`` 0, ``<pad>`` 1, then every token of ``texts`` in sorted order."""
    tokens = sorted({token for text in texts for token in tokenize(text)})
    return {UNK: 0, PAD: 1, **{token: index + 2 for index, token in enumerate(tokens)}}


def token_ids(text: str, vocab: dict[str, int]) -> list[int]:
    return [vocab.get(token, vocab[UNK]) for token in tokenize(text)]
