# %%
# Setup. On Colab: clone the repository, install it and the Debian data packages (a few
# minutes). In a checkout where `pip install -e .` ran (and in CI) this cell installs nothing.
import importlib.util
import os
import subprocess
import sys

REPO_URL = ""  # Colab: this repository's git URL (or your fork's), e.g. https://github.com/<you>/ldm_jax.git
if importlib.util.find_spec("ldm_jax") is None:
    if not REPO_URL:
        raise RuntimeError(
            "ldm_jax is not installed here: set REPO_URL above and run this cell again."
        )
    subprocess.run(["git", "clone", "--depth=1", REPO_URL, "ldm_jax"], check=True)
    tpu = ["jax[tpu]"] if os.path.exists("/dev/accel0") or "COLAB_TPU_ADDR" in os.environ else []
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "-e", "ldm_jax", *tpu], check=True
    )
    subprocess.run(["bash", "ldm_jax/scripts/install_debian_deps.sh"], check=True)
    sys.path.insert(0, os.path.abspath("ldm_jax"))  # the editable install, without a restart
