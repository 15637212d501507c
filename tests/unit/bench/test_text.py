"""The text row's pieces that need no server: the reviews, the in-process window, the table."""

from bench import text
from handlers.tasks.text import tokenize


def test_reviews_vary_in_length_and_are_the_same_every_time() -> None:
    reviews = text.reviews()
    assert reviews == text.reviews() and len(reviews) == text.REVIEWS
    lengths = {len(tokenize(review)) for review in reviews}
    assert len(lengths) > 3


def test_rounds_combine_into_medians_and_a_table() -> None:
    rows = [
        text.TextRow("gateway", "c1", tokens, tokens / 6, 2.0, errors)
        for tokens, errors in ((100.0, 0), (300.0, 1), (200.0, 0))
    ]
    (combined,) = text.combine(rows)
    assert (combined.tokens_per_s, combined.errors) == (200.0, 1)
    table = text.markdown([combined], ["a b c", "d"])
    assert "2 reviews of 1-3 tokens (mean 2.0)" in table
    assert "| gateway | c1 | 200 | 33 | 2.00 ms | 1 |" in table
