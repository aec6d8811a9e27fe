"""Packaging for a Space and for Docker: front matter, packages.txt, LFS rules, .dockerignore, the Dockerfile's
steps, and ZeroGPU's decorator (stubbed: the ``spaces`` package exists only on Spaces)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

from pipelines.models.presets import REPO_ROOT

PACKAGES = (REPO_ROOT / "packages.txt").read_text().split()
# The Dockerfile's instructions (its comments left out).
DOCKERFILE = "\n".join(line for line in (REPO_ROOT / "Dockerfile").read_text().splitlines()
                       if not line.lstrip().startswith("#"))


def front_matter() -> dict[str, str]:
    text = (REPO_ROOT / "README.md").read_text()
    block = text.split("---\n")[1]
    return {key.strip(): value.strip().strip('"') for key, value in (line.split(":", 1) for line in block.splitlines())}


def pins(name: str) -> dict[str, str]:
    lines = (REPO_ROOT / name).read_text().splitlines()
    return dict(line.split("==") for line in lines if "==" in line and not line.startswith("#"))


def test_the_space_is_a_gradio_space_of_the_pinned_gradio_and_python():
    meta = front_matter()
    # ZeroGPU needs the Gradio SDK; a Gradio Space ignores the Dockerfile (README "Run with Docker").
    assert meta["sdk"] == "gradio" and "app_port" not in meta
    assert (REPO_ROOT / meta["app_file"]).is_file()
    assert meta["sdk_version"] == pins("requirements.txt")["gradio"]
    assert f"FROM python:{meta['python_version']}-slim" in DOCKERFILE


def test_debian_packages_are_listed_once_for_the_space_docker_and_make():
    assert PACKAGES == ["libusb-1.0-0", "libgl1", "libegl1", "ffmpeg"]
    assert "COPY packages.txt /tmp/packages.txt" in DOCKERFILE
    assert "xargs apt-get install -y --no-install-recommends < /tmp/packages.txt" in DOCKERFILE
    assert "scripts/apt_install.sh $$(cat packages.txt)" in (REPO_ROOT / "Makefile").read_text()


def test_the_runtime_image_installs_no_test_tools_and_serves_the_studio_as_a_user():
    runtime, dev = pins("requirements.txt"), pins("requirements-dev.txt")
    assert not {"pytest", "playwright"} & set(runtime) and {"pytest", "playwright"} <= set(dev)
    assert "-r requirements.txt" in (REPO_ROOT / "requirements-dev.txt").read_text()
    assert "requirements-dev" not in DOCKERFILE and "-r requirements.txt -c constraints.txt" in DOCKERFILE
    steps = [line.split()[0] for line in DOCKERFILE.splitlines() if line and line[0].isupper()]
    assert steps[0] == "FROM" and steps[-2:] == ["EXPOSE", "CMD"]
    assert steps.index("USER") < steps.index("RUN", steps.index("USER"))  # pip runs as the user, not root
    assert 'CMD ["python", "app.py"]' in DOCKERFILE and "EXPOSE 7860" in DOCKERFILE
    assert "GRADIO_SERVER_NAME=0.0.0.0" in DOCKERFILE and f"torch=={runtime['torch']}" in DOCKERFILE


def docker_ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent folders decides (``!`` keeps)."""
    parts = path.split("/")
    ignored = False
    for pattern in patterns:
        keep = pattern.startswith("!")
        body = pattern.lstrip("!")
        regex = re.escape(body).replace(r"\*\*/", "(?:.*/)?").replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        if any(re.fullmatch(regex, "/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            ignored = not keep
    return ignored


def tracked_files() -> list[str]:
    if shutil.which("git") is None or not (REPO_ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    return subprocess.run(["git", "ls-files"], cwd=REPO_ROOT, capture_output=True, text=True,
                          check=True).stdout.split()


def test_dockerignore_leaves_out_environments_tests_and_outputs_but_not_what_the_studio_reads():
    patterns = [line for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
                if line and not line.startswith("#")]
    for path in (".venv/bin/python", "tests/conftest.py", "artifacts/x.png", "runs/a/b.safetensors",
                 "pipelines/__pycache__/x.pyc", ".git/HEAD", "bench/flexecontrol.py", "requirements-dev.txt"):
        assert docker_ignored(path, patterns), path
    kept = [p for p in tracked_files() if not docker_ignored(p, patterns)]
    assert {"app.py", "requirements.txt", "constraints.txt", "packages.txt", "bench/results/flexecontrol.jsonl",
            "assets/models/tiny/shapes-sd/model_index.json"} <= set(kept)
    assert not [p for p in kept if p.startswith(("tests/", "docs/", ".ci/"))]


def test_every_tracked_binary_file_goes_through_lfs():
    files = tracked_files()
    binary = [p for p in files if b"\0" in (REPO_ROOT / p).read_bytes()[:8000]]
    assert {Path(p).suffix for p in binary} >= {".safetensors", ".png"}
    out = subprocess.run(["git", "check-attr", "filter", "--", *binary], cwd=REPO_ROOT, capture_output=True,
                         text=True, check=True).stdout.splitlines()
    assert len(out) == len(binary) and all(line.endswith(": filter: lfs") for line in out)
    rules = (REPO_ROOT / ".gitattributes").read_text()
    for suffix in ("safetensors", "png", "npz", "ply", "mp4", "gif"):
        assert f"*.{suffix} filter=lfs diff=lfs merge=lfs -text" in rules


# ----- ZeroGPU
def stub_spaces(durations: list) -> types.ModuleType:
    """A ``spaces`` module whose ``GPU(duration=...)`` records the duration on the function it wraps."""
    module = types.ModuleType("spaces")

    def GPU(duration: int):  # noqa: N802 - the real package's name
        def wrap(function):
            durations.append(duration)
            function.zero_gpu_duration = duration
            return function

        return wrap

    module.GPU = GPU
    return module


def test_the_gpu_decorator_applies_spaces_gpu_only_on_a_space(monkeypatch):
    from pipelines.zerogpu import DURATIONS, gpu

    durations: list[int] = []
    monkeypatch.setitem(sys.modules, "spaces", stub_spaces(durations))
    monkeypatch.delenv("SPACE_ID", raising=False)
    assert not hasattr(gpu("mojito")(lambda: 1), "zero_gpu_duration") and durations == []
    monkeypatch.setenv("SPACE_ID", "user/worldstudio")
    assert gpu("mojito")(lambda: 1).zero_gpu_duration == DURATIONS["mojito"] == 180
    monkeypatch.setitem(sys.modules, "spaces", None)  # a Space without the package: import fails, no-op
    function = lambda: 2  # noqa: E731
    assert gpu("match")(function) is function


def test_runner_calls_are_decorated_with_their_durations_when_imported_on_a_space(tmp_path):
    """In a fresh interpreter on a (pretend) Space with a stub ``spaces``: what each runner call asks for."""
    (tmp_path / "spaces.py").write_text(
        "def GPU(duration):\n"
        "    def wrap(function):\n"
        "        function.zero_gpu_duration = duration\n"
        "        return function\n"
        "    return wrap\n")
    script = (
        "import json\n"
        "from pipelines.matching.runner import MatchRunner\n"
        "from pipelines.flexecontrol.runner import FlexEControlRunner\n"
        "from pipelines.mojito.runner import MojitoRunner\n"
        "from pipelines.morpho4d.runner import Morpho4DRunner\n"
        "found = {f'{c.__name__}.{n}': getattr(f, 'zero_gpu_duration') for c in (MatchRunner, FlexEControlRunner,"
        " MojitoRunner, Morpho4DRunner) for n, f in vars(c).items() if hasattr(f, 'zero_gpu_duration')}\n"
        "print(json.dumps(found, sort_keys=True))\n")
    env = {**os.environ, "SPACE_ID": "user/worldstudio", "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO_ROOT}"}
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.splitlines()[-1]) == {
        "FlexEControlRunner.run": 60, "MatchRunner.evaluate": 300, "MatchRunner.generate": 60,
        "MatchRunner.learn": 300, "MatchRunner.run": 60, "MojitoRunner.run": 180}


def test_off_a_space_the_runner_calls_are_the_plain_functions():
    from pipelines.matching.runner import MatchRunner
    from pipelines.mojito.runner import MojitoRunner

    assert "SPACE_ID" not in os.environ
    assert not hasattr(MatchRunner.run, "zero_gpu_duration") and MojitoRunner.run.__qualname__ == "MojitoRunner.run"


@pytest.mark.slow
def test_the_image_builds_where_docker_runs():
    if shutil.which("docker") is None or subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        pytest.skip("no Docker daemon on this machine")
    build = subprocess.run(["docker", "build", "-q", "--build-arg", "TORCH_INDEX=https://download.pytorch.org/whl/cpu",
                            "-t", "worldstudio-test", "."], cwd=REPO_ROOT, capture_output=True, text=True, timeout=3600)
    assert build.returncode == 0, build.stderr[-3000:]
    run = subprocess.run(["docker", "run", "--rm", "worldstudio-test", "python", "-c",
                          "import open3d, app; import pytest"], capture_output=True, text=True, timeout=600)
    assert "No module named 'pytest'" in run.stderr  # the studio imports; the test tools are not there
