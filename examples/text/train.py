"""Train WordAVGModel on generated film reviews, deterministically, in seconds on a CPU.

    python examples/text/train.py      # -> sentiment.pt, vocab.json (labels.json is committed)

The tutorials' loop (``zero_grad`` -> ``backward`` -> ``step``) over padded batches with their
true lengths, and their training checkpoint: ``epoch``, ``model_state_dict``,
``optimizer_state_dict``, ``loss``. Exits 1 when held-out accuracy is below 95%.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # run as a script or imported from elsewhere, the siblings import
    sys.path.insert(0, str(HERE))

from data import LABELS, PAD, build_vocab, load_split, token_ids  # noqa: E402
from model import WordAVGModel  # noqa: E402

SEED = 0
MIN_ACCURACY = 0.95


def padded(texts: list[str], vocab: dict[str, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids padded with ``<pad>`` to the longest, and the true lengths."""
    ids = [token_ids(text, vocab) for text in texts]
    lengths = torch.tensor([len(row) for row in ids])
    batch = torch.full((len(ids), int(lengths.max())), vocab[PAD], dtype=torch.int64)
    for row, values in enumerate(ids):
        batch[row, : len(values)] = torch.tensor(values)
    return batch, lengths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--out", type=Path, default=HERE / "sentiment.pt")
    parser.add_argument("--vocab", type=Path, default=HERE / "vocab.json")
    args = parser.parse_args(argv)

    torch.manual_seed(SEED)
    torch.set_num_threads(1)  # one thread: the same float sums, hence the same weights, anywhere
    torch.use_deterministic_algorithms(True)

    split = load_split()
    vocab = build_vocab(split.train_texts)
    train_x, train_lengths = padded(split.train_texts, vocab)
    train_y = torch.tensor(split.train_labels)
    test_x, test_lengths = padded(split.test_texts, vocab)
    test_y = torch.tensor(split.test_labels)

    model = WordAVGModel(len(vocab), output_size=len(LABELS), pad_idx=vocab[PAD])
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    loss_fn = nn.CrossEntropyLoss()
    loss = torch.tensor(float("nan"))
    model.train()
    for epoch in range(args.epochs):
        order = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(epoch))
        for first in range(0, len(order), args.batch_size):
            batch = order[first : first + args.batch_size]
            optimizer.zero_grad()
            loss = loss_fn(model(train_x[batch], train_lengths[batch]), train_y[batch])
            loss.backward()
            optimizer.step()
        print(f"epoch {epoch + 1}/{args.epochs}: loss {loss.item():.4f}")

    model.eval()
    with torch.inference_mode():
        predicted = model(test_x, test_lengths).argmax(dim=1)
    correct = int((predicted == test_y).sum())
    accuracy = correct / len(test_y)
    print(f"held-out accuracy: {accuracy:.2%} ({correct}/{len(test_y)})")

    torch.save(
        {
            "epoch": args.epochs - 1,
            "model_state_dict": model.state_dict(),
            "optimizer_state_dict": optimizer.state_dict(),
            "loss": float(loss.item()),
        },
        args.out,
    )
    args.vocab.write_text(json.dumps(vocab, indent=0, sort_keys=True) + "\n")
    print(f"saved {args.out} ({len(vocab)} tokens in {args.vocab.name})")
    if accuracy < MIN_ACCURACY:
        print(f"accuracy below {MIN_ACCURACY:.0%}: not good enough to serve", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
