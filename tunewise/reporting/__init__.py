"""Figures written into a run folder (headless, PNG)."""

from tunewise.reporting.plots import plot_calibration, plot_confusion_matrix, plot_loss_curve

__all__ = ["plot_calibration", "plot_confusion_matrix", "plot_loss_curve"]
