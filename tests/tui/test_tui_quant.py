"""The wizard's auto export option and budget field; the Results view of quant.json."""
import asyncio
import json

import pytest

from edgetune.errors import EdgetuneError
from edgetune.results import QuantResult
from edgetune.tui.app import EdgetuneApp
from edgetune.tui.widgets.quant_view import quant_text

from tui_fixtures import FakeRunner


def test_export_screen_auto_and_budget():
    async def go():
        app = EdgetuneApp(runner=FakeRunner())
        async with app.run_test(size=(80, 24)) as pilot:
            from edgetune.tui.screens.export import ExportScreen
            await app.push_screen(ExportScreen())
            await pilot.pause()
            app.screen.query_one("#quants").select("auto")
            app.screen.query_one("#min_top1").value = "95"
            mixed = app.screen.query_one("#auto_mixed")
            assert mixed.value is False  # the recipe's default
            # Choosing auto shows its fields: click only once the layout has them on screen (it raced under load in CI).
            await pilot.pause()
            mixed.scroll_visible(animate=False)
            await pilot.pause()
            await pilot.click("#auto_mixed")
            await pilot.pause()
            assert mixed.value is True
            app.screen.apply()
            assert app.recipe.export.quants == ["auto"] and app.recipe.export.auto_min_top1 == 0.95
            assert app.recipe.export.auto_mixed is True
            from edgetune.tui.screens.summary import SummaryScreen
            await app.push_screen(SummaryScreen())
            await pilot.pause()
            text = str(app.screen.query_one("#summary-text").render())
            assert ("auto: the smallest file within top-1 >= 95%, accuracy >= F16's - 1%, mixed types per tensor tried too"
                    in text), text
            app.pop_screen()
            await pilot.pause()
            app.screen.query_one("#min_top1").value = "lots"
            with pytest.raises(EdgetuneError, match="auto budget 'lots' must be a percentage"):
                app.screen.apply()
            app.screen.query_one("#min_top1").value = "180"
            with pytest.raises(EdgetuneError, match="export.auto_min_top1 1.8 must be in"):
                app.screen.apply()
    asyncio.run(go())


def test_results_view_marks_the_recommended_file_and_plots_size_against_kld():
    def row(label, mib, kld, top1, **extra):
        return {"label": label, "type": label, "bytes": int(mib * 2**20), "mean_kld": kld, "p99_kld": 10 * kld, "top1": top1,
                "accuracy": 1.0, "gain_kept": 0.97, "gave_back": False, **extra}
    summary = {"imatrix": {"tokens": 2048, "path": "x", "note": ""},
               "sweep": {"budget": "top-1 >= 98%", "met": True, "recommended": "Q4_K_M",
                         "why": "Q4_K_M is the smallest file within the budget"},
               "files": [row("Q2_K", 2.0, 0.5, 0.8), row("Q4_K_M", 4.0, 0.01, 0.99, recommended=True),
                         {"label": "Q8_0", "type": "Q8_0", "predicted_bytes": 8 * 2**20, "status": "not measured"}]}
    text = quant_text(QuantResult.from_dict(json.loads(json.dumps(summary)))).plain  # as read from quant.json
    assert "Q4_K_M is the smallest file within the budget" in text
    assert "Q4_K_M" in text.splitlines()[3] and text.splitlines()[3].endswith("★")
    assert "mean KLD (log) against file size" in text and "2.0" in text and "4.0" in text
    plot = text.split("against file size\n")[1].splitlines()
    assert plot[0].rstrip().endswith("a") and plot[6].rstrip().endswith("b")  # Q2_K high KLD left top, Q4_K_M bottom right
