"""Checkboxes, radio buttons and selection lists whose ticked and unticked states differ in shape,
not only in colour: a terminal without colour (or a reader who cannot tell the colours apart) sees
[X] against [ ] and (●) against ( ), where Textual draws the same glyph both ways."""
from __future__ import annotations

from rich.segment import Segment
from textual.strip import Strip
from textual.widgets import Checkbox as _Checkbox
from textual.widgets import RadioButton as _RadioButton
from textual.widgets import SelectionList as _SelectionList
from textual.widgets._toggle_button import ToggleButton
from textual.widgets.option_list import OptionDoesNotExist


class _Shaped:
    TICKED = "X"
    UNTICKED = " "

    @property
    def _button(self):
        self.BUTTON_INNER = self.TICKED if self.value else self.UNTICKED
        return super()._button


class Checkbox(_Shaped, _Checkbox):
    pass


class RadioButton(_Shaped, _RadioButton):
    TICKED = "●"


class SelectionList(_SelectionList):
    def render_line(self, y: int) -> Strip:
        strip = super().render_line(y)
        try:
            selection = self.get_option_at_index(self.scroll_offset.y + y)
        except OptionDoesNotExist:
            return strip
        segments = list(strip)
        if selection.value in self._selected or len(segments) < 2 or segments[1].text != ToggleButton.BUTTON_INNER:
            return strip
        segments[1] = Segment(" ", segments[1].style, segments[1].control)
        return Strip(segments, strip.cell_length)
