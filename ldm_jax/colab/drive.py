"""Saving a workdir to Google Drive from Colab (a Colab session's disk is lost at its end)."""

from __future__ import annotations

import os
import shutil

DRIVE_MOUNT = "/content/drive"


def in_colab() -> bool:
    """Whether this kernel runs in Google Colab."""
    try:
        import google.colab  # noqa: F401
    except ImportError:
        return False
    return True


def save_to_drive(workdir: str, drive_folder: str = "MyDrive/ldm_jax") -> str:
    """Mounts Drive (Colab asks for permission once) and copies `workdir` into `drive_folder`.

    A later session resumes training from the copy: `--workdir /content/drive/MyDrive/...`.

    Returns:
      The copy's path.

    Raises:
      RuntimeError: outside Colab (copy the workdir yourself there).
      FileNotFoundError: if `workdir` does not exist.
    """
    if not in_colab():
        raise RuntimeError(
            f"Google Drive is only mounted in Colab; outside it copy {workdir} yourself."
        )
    if not os.path.isdir(workdir):
        raise FileNotFoundError(f"{workdir} is not a folder: train first.")
    from google.colab import drive

    drive.mount(DRIVE_MOUNT)
    target = os.path.join(DRIVE_MOUNT, drive_folder, os.path.basename(os.path.normpath(workdir)))
    shutil.copytree(workdir, target, dirs_exist_ok=True)
    return target
