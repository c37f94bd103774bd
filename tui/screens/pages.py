"""The wizard's pages in order, written once: the trail at the top, Back/Next/Run and each page's
successor all read PAGES (the last page's successor is the run itself)."""
from __future__ import annotations

from .base_model import BaseModelScreen
from .dataset import DatasetScreen
from .export import ExportScreen
from .summary import SummaryScreen
from .training import TrainingScreen

PAGES = (BaseModelScreen, DatasetScreen, TrainingScreen, ExportScreen, SummaryScreen)
