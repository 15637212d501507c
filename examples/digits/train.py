"""Train DigitsNet on scikit-learn's digits, deterministically, in seconds on a CPU.

    python examples/digits/train.py            # train from scratch -> digits.pt, sample.png
    python examples/digits/train.py --resume --epochs 30   # continue from digits.pt

Follows the PyTorch tutorials' loop (``zero_grad`` -> ``backward`` -> ``step``) and saves their
training checkpoint: ``epoch``, ``model_state_dict``, ``optimizer_state_dict``, ``loss``. Each
epoch's shuffle is seeded by its number, so a resumed run ends where an uninterrupted one does.
Exits 1 when held-out accuracy is below 95%, so a bad model never reaches ``make archive``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # run as a script or imported from elsewhere, the siblings import
    sys.path.insert(0, str(HERE))

from data import load_split, normalise, png_bytes  # noqa: E402
from model import DigitsNet  # noqa: E402

SEED = 0
MIN_ACCURACY = 0.95
SAMPLE_INDEX = 0  # the held-out image written to sample.png


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15, help="train until this epoch count")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--out", type=Path, default=HERE / "digits.pt")
    parser.add_argument("--sample", type=Path, default=HERE / "sample.png")
    parser.add_argument("--resume", action="store_true", help="continue from --out")
    args = parser.parse_args(argv)

    torch.manual_seed(SEED)
    torch.set_num_threads(1)  # one thread: the same float sums, hence the same weights, anywhere
    torch.use_deterministic_algorithms(True)

    split = load_split()
    train_x, train_y = normalise(split.train_images), torch.from_numpy(split.train_labels)
    test_x, test_y = normalise(split.test_images), torch.from_numpy(split.test_labels)

    model = DigitsNet()
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    loss_fn = nn.CrossEntropyLoss()
    start = 0
    if args.resume:
        checkpoint = torch.load(args.out, map_location="cpu", weights_only=True)
        model.load_state_dict(checkpoint["model_state_dict"])
        optimizer.load_state_dict(checkpoint["optimizer_state_dict"])
        start = int(checkpoint["epoch"]) + 1
        print(f"resuming after epoch {checkpoint['epoch']} (loss {checkpoint['loss']:.4f})")

    loss = torch.tensor(float("nan"))
    model.train()
    for epoch in range(start, args.epochs):
        order = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(epoch))
        for first in range(0, len(order), args.batch_size):
            batch = order[first : first + args.batch_size]
            optimizer.zero_grad()
            loss = loss_fn(model(train_x[batch]), train_y[batch])
            loss.backward()
            optimizer.step()
        print(f"epoch {epoch + 1}/{args.epochs}: loss {loss.item():.4f}")
    last_epoch = max(start, args.epochs) - 1

    model.eval()
    with torch.inference_mode():
        correct = int((model(test_x).argmax(dim=1) == test_y).sum())
    accuracy = correct / len(test_y)
    print(f"held-out accuracy: {accuracy:.2%} ({correct}/{len(test_y)})")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "epoch": last_epoch,
            "model_state_dict": model.state_dict(),
            "optimizer_state_dict": optimizer.state_dict(),
            "loss": float(loss.item()),
        },
        args.out,
    )
    args.sample.write_bytes(png_bytes(split.test_images[SAMPLE_INDEX]))
    print(f"saved {args.out} and {args.sample} (a held-out {int(split.test_labels[SAMPLE_INDEX])})")
    if accuracy < MIN_ACCURACY:
        print(f"accuracy below {MIN_ACCURACY:.0%}: not good enough to serve", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
