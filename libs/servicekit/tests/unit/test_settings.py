from datetime import timedelta

import pytest

from servicekit import settings


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("100ms", 0.1), ("1m30s", 90), ("1.5h", 5400), ("2", 2), (5, 5), ("250us", 0.00025)],
)
def test_durations_parse_go_style_strings_and_numbers(text: object, seconds: float) -> None:
    assert settings.parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("bad", ["abc", "10 parsecs", "-1s", "1s2x", True, None])
def test_bad_durations_are_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        settings.parse_duration(bad)
