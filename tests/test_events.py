"""Progress events as the TUI and the CLI print them."""
from edgetune.events import duration


def test_durations_keep_a_unit_and_are_never_zero():
    assert duration(0.004) == "4 ms" and duration(0.0) == "<1 ms"
    assert duration(35.0) == "35.0 s" and duration(725) == "12m05s"
