"""Helpers for the notebooks in `notebooks/` (Colab TPU, GPU or CPU): accelerator detection and
config fitting, a live loss plot, inline images, saving a workdir to Google Drive."""
