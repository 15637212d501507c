"""``text-classification``: UTF-8 text in, the top-k classes out as ``{label: probability}``.

The text (a ``text/plain`` body or a JSON string) is split into words and punctuation
(``\\w+|[^\\w\\s]``), lowercased unless ``lowercase = false``, and mapped to ids through the
vocabulary (unknown words to ``unk_token``'s id): an int64 ``[tokens]`` instance. A JSON list
of token ids (or a ``.npy`` array) is taken as it is, checked against the vocabulary's range.
Instances of different lengths run as one call per length, or, with ``pad_token`` (or
``[model.input] pad_value``) and ``[model.input] lengths_arg``, padded in one call.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from handlers.decoding import NPY_MAGIC, decode_array
from handlers.errors import RequestError, SettingsError
from handlers.inputs import POSITIONAL, Call, InputSpec, Instance, collate
from handlers.tasks.base import Ranking, TaskKind, ranking_for

if TYPE_CHECKING:
    from handlers.settings import HandlerSettings

TOKEN = re.compile(r"\w+|[^\w\s]")
DEFAULT_MAX_TOKENS = 512


@dataclass(frozen=True)
class TextSpec:
    """The ``text`` setting: the vocabulary file and how text becomes token ids."""

    vocab: str
    lowercase: bool = True
    unk_token: str | None = None
    pad_token: str | None = None
    max_tokens: int = DEFAULT_MAX_TOKENS


def parse_text(raw: Any) -> TextSpec:
    """The ``text`` handler setting; SettingsError names the bad key."""
    keys = {"vocab", "lowercase", "unk_token", "pad_token", "max_tokens"}
    if not isinstance(raw, Mapping) or set(raw) - keys:
        raise SettingsError(f"handler setting 'text' takes {', '.join(sorted(keys))}")
    vocab = raw.get("vocab")
    if not isinstance(vocab, str) or not vocab:
        raise SettingsError("handler setting 'text.vocab' is required (a JSON file name)")
    lowercase = raw.get("lowercase", True)
    if not isinstance(lowercase, bool):
        raise SettingsError("handler setting 'text.lowercase' must be true or false")
    for key in ("unk_token", "pad_token"):
        if raw.get(key) is not None and not isinstance(raw[key], str):
            raise SettingsError(f"handler setting 'text.{key}' must be a string")
    max_tokens = raw.get("max_tokens", DEFAULT_MAX_TOKENS)
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise SettingsError("handler setting 'text.max_tokens' must be a positive integer")
    return TextSpec(vocab, lowercase, raw.get("unk_token"), raw.get("pad_token"), max_tokens)


def load_vocab(path: Path) -> dict[str, int]:
    """Token -> id from a JSON object (``{"the": 2}``) or a list of tokens (id = position)."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SettingsError(f"vocabulary file {path.name} can't be read: {exc}") from None
    if isinstance(raw, list) and raw and all(isinstance(t, str) for t in raw):
        return {token: index for index, token in enumerate(raw)}
    if (
        isinstance(raw, dict)
        and raw
        and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in raw.values())
    ):
        return dict(raw)
    raise SettingsError(
        f"vocabulary file {path.name} must be a JSON object mapping tokens to ids >= 0, "
        "or a JSON list of tokens"
    )


def tokenize(text: str, lowercase: bool = True) -> list[str]:
    """Words and punctuation marks, in order (``\\w+|[^\\w\\s]``)."""
    return TOKEN.findall(text.lower() if lowercase else text)


class TextClassificationTask:
    """Text (or token ids) in, the top-k classes out as ``{label: probability}``."""

    def __init__(
        self,
        spec: TextSpec,
        vocab: Mapping[str, int],
        ranking: Ranking,
        input_spec: InputSpec | None = None,
    ) -> None:
        self.spec = spec
        self.vocab = dict(vocab)
        self.ranking = ranking
        self.unk_id = self._id(spec.unk_token, "unk_token")
        pad_id = self._id(spec.pad_token, "pad_token")
        given = input_spec or InputSpec((-1,), "int64")
        # The instance every body becomes: token ids, at most max_tokens, inside the vocabulary.
        self.input = InputSpec(
            shape=(-1,),
            dtype=given.dtype,
            max_elements=spec.max_tokens,
            pad_value=given.pad_value if given.pad_value is not None else pad_id,
            lengths_arg=given.lengths_arg,
            range=given.range or (0.0, float(max(self.vocab.values()))),
        )
        if self.input.lengths_arg is not None and self.input.pad_value is None:
            raise SettingsError("'input.lengths_arg' needs 'text.pad_token' or 'input.pad_value'")
        if pad_id is not None and self.input.lengths_arg is None:
            raise SettingsError(
                "'text.pad_token' pads only with 'input.lengths_arg' (the true lengths): "
                "set [model.input] lengths_arg, or drop pad_token to run each length alone"
            )

    def _id(self, token: str | None, key: str) -> float | None:
        if token is None:
            return None
        if token not in self.vocab:
            raise SettingsError(f"'text.{key}' {token!r} is not in the vocabulary")
        return float(self.vocab[token])

    def decode(self, payload: Any) -> Instance:
        if isinstance(payload, bytes | bytearray):
            if bytes(payload[:6]) == NPY_MAGIC:
                return {POSITIONAL: decode_array(payload, self.input)}
            try:
                payload = bytes(payload).decode("utf-8")
            except UnicodeDecodeError:
                raise RequestError("expected UTF-8 text (or a JSON list of token ids)") from None
        if isinstance(payload, list):
            return {POSITIONAL: decode_array(payload, self.input)}
        if not isinstance(payload, str):
            raise RequestError(
                f"expected text (text/plain or a JSON string) or a JSON list of token ids; "
                f"got a JSON {type(payload).__name__}"
            )
        return {POSITIONAL: self.token_ids(payload)}

    def token_ids(self, text: str) -> torch.Tensor:
        """``text`` as an int64 ``[tokens]`` tensor; RequestError when it can't be."""
        tokens = tokenize(text, self.spec.lowercase)
        if not tokens:
            raise RequestError("the text has no words or punctuation to classify")
        if len(tokens) > self.spec.max_tokens:
            raise RequestError(
                f"the text has {len(tokens):,} tokens; this model takes at most "
                f"{self.spec.max_tokens:,}"
            )
        ids = []
        for token in tokens:
            index = self.vocab.get(token)
            if index is None:
                if self.unk_id is None:
                    raise RequestError(
                        f"the word {token!r} is not in the vocabulary (and it has no unk_token)"
                    )
                index = int(self.unk_id)
            ids.append(index)
        return torch.tensor(ids, dtype=torch.int64).to(_TORCH_INT[self.input.dtype])

    def collate(self, instances: Sequence[Instance]) -> list[Call]:
        return collate(instances, (self.input,))

    def encode(self, output: Any) -> dict[str, float]:
        return self.ranking.encode(output)

    def encode_rows(self, output: Any, count: int) -> list[dict[str, float]] | None:
        return self.ranking.encode_rows(output, count)

    def example_payloads(self, generator: np.random.Generator) -> list[Any]:
        words = [t for t in self.vocab if TOKEN.fullmatch(t) and t != self.spec.pad_token]
        words = words or list(self.vocab)
        picks = generator.choice(len(words), size=7)
        low, high = self.input.range or (0.0, 1.0)
        ids = generator.integers(int(low), int(high) + 1, size=5).tolist()
        # Two lengths of text, and token ids (as a JSON list) of a third.
        return [
            " ".join(words[i] for i in picks[:3]),
            " ".join(words[i] for i in picks),
            ids[: min(5, self.spec.max_tokens)],
        ]

    def check_answer(self, answer: Any) -> None:
        self.ranking.check_answer(answer)


_TORCH_INT = {"int64": torch.int64, "int32": torch.int32}


def _validate(settings: HandlerSettings) -> None:
    given = settings.input
    if given is not None and (given.shape != (-1,) or given.dtype not in _TORCH_INT):
        raise SettingsError(
            "task 'text-classification' takes token ids: 'input' must have shape [-1] and "
            "dtype int64 or int32"
        )
    if given is not None and given.max_elements is not None:
        raise SettingsError("task 'text-classification' bounds its input with 'text.max_tokens'")


def _build(settings: HandlerSettings, base_dir: Path) -> TextClassificationTask:
    assert settings.text is not None
    vocab = load_vocab(base_dir / settings.text.vocab)
    return TextClassificationTask(
        settings.text, vocab, ranking_for(settings, base_dir), settings.input
    )


KIND = TaskKind(
    name="text-classification",
    uses=frozenset({"text", "input", "labels", "scores", "top_k"}),
    needs=(("text",),),
    build=_build,
    validate=_validate,
    default_dtype="int64",
)
