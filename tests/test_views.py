"""What views show while an operation runs: the request rate beside the progress bars."""

from __future__ import annotations

from invoicesync import views


def test_the_rate_shows_answers_per_second_and_the_pace_once_campfire_has_throttled() -> None:
    assert views.rate_text(lambda: (312.4, None)) == "312 req/s"
    assert views.rate_text(lambda: (57.8, 58.94)) == "58 req/s (paced at 59/s after 429s)"
