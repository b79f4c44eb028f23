"""Shared fixtures: one tiny warmed-up model per test session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A small Qwen3 model after a short SFT warm-up (about 30 s on 2 cores)."""
    from rl.config import load_config
    from rl.models import init_model
    from rl.sft import run_sft

    root = tmp_path_factory.mktemp("tiny_model")
    cfg = load_config(ROOT / "configs" / "grpo_math_tiny.yaml",
                      ["model.sft.steps=60", "model.sft.num_examples=4000", "model.sft.batch_size=32",
                       "environments.math.levels=[1]"])
    init_model(cfg.model.init, root / "init", seed=0)
    return run_sft(root / "init", root / "sft", cfg)


def run_rl(*args: str, timeout: float = 600, **popen) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "rl.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout, **popen)


DOCKER_IMAGE = "rl-sandbox-python"


@pytest.fixture(scope="session")
def docker_image(tmp_path_factory):
    """A reachable Docker engine with a Python image built offline, for the Docker
    sandbox's tests. Test set-up may start the daemon (as root, where ``dockerd``
    is installed: scripts/setup.sh installs docker.io but never starts it) and
    builds the image with debootstrap (about a minute, once per engine).
    Skips when neither an engine nor the means to start one are here."""
    import shutil
    import time

    docker = pytest.importorskip("docker")

    def ping():
        try:
            client = docker.from_env()
            client.ping()
            return client
        except Exception:  # noqa: BLE001 - no engine (yet)
            return None

    client, daemon = ping(), None
    if client is None:
        if os.getuid() != 0 or shutil.which("dockerd") is None:
            pytest.skip("no Docker engine, and dockerd cannot be started here (needs root and docker.io)")
        log = open(tmp_path_factory.mktemp("dockerd") / "dockerd.log", "w")
        daemon = subprocess.Popen(["dockerd"], stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + 60
        while (client := ping()) is None and time.monotonic() < deadline and daemon.poll() is None:
            time.sleep(0.5)
        if client is None:
            daemon.kill()
            pytest.skip("dockerd did not start (see its log)")
    try:
        try:
            client.images.get(DOCKER_IMAGE)
        except docker.errors.ImageNotFound:
            if shutil.which("debootstrap") is None:
                pytest.skip("no image and no debootstrap to build one")
            root = tmp_path_factory.mktemp("rootfs")
            subprocess.run(["debootstrap", "--variant=minbase", "--include=python3-minimal", "bookworm", str(root)],
                           check=True, capture_output=True, timeout=900)
            tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
            subprocess.run(["docker", "import", "--change", "ENV PATH=/usr/bin:/bin", "-", DOCKER_IMAGE],
                           stdin=tar.stdout, check=True, capture_output=True, timeout=300)
            tar.wait()
        yield DOCKER_IMAGE
    finally:
        if daemon is not None:
            daemon.terminate()
            try:
                daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                daemon.kill()
