"""The Dockerfile, kept honest without a Docker engine (CI has none).

The image is: the files its COPY lines name, installed by scripts/setup.sh without test extras,
started as ``python main.py``. This test does exactly that in a scratch directory holding only
those files, then checks what the HEALTHCHECK checks. A file missing from COPY, or an install step
missing from setup.sh, fails here.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess

from tests.bridge import ROOT, MainProcess, child_env

DOCKERFILE = ROOT / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def test_dockerfile_follows_the_deployment_rules() -> None:
    steps = instructions()
    kinds = [k for k, _ in steps]
    assert steps[0][0] == "FROM" and "slim" in steps[0][1]
    user = [v for k, v in steps if k == "USER"]
    assert user and user[-1] not in ("root", "0")
    assert kinds.index("USER") > max(i for i, k in enumerate(kinds) if k == "RUN")
    assert ("EXPOSE", "8000") in steps
    assert any(k == "HEALTHCHECK" and "/health/live" in v for k, v in steps)
    assert any(k == "RUN" and "scripts/setup.sh" in v for k, v in steps)
    assert any(k == "CMD" and "main.py" in v for k, v in steps)
    env = " ".join(v for k, v in steps if k == "ENV")
    assert 'MTANGO_EXTRAS=""' in env  # the runtime install: no test extras in the image


def copied_paths() -> list[str]:
    paths = []
    for keyword, value in instructions():
        if keyword == "COPY":
            *sources, _destination = shlex.split(value)
            paths += sources
    return paths


def test_image_recipe_installs_and_serves(control_system, tmp_path) -> None:
    """Only the COPY'd files, the image's install command, the image's start command."""
    context = tmp_path / "image"
    context.mkdir()
    for name in copied_paths():
        source = ROOT / name
        assert source.exists(), f"Dockerfile copies {name}, which does not exist"
        if source.is_dir():
            shutil.copytree(source, context / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, context / name)
    venv = tmp_path / "venv"
    env = {**child_env(), "MTANGO_VENV": str(venv), "MTANGO_EXTRAS": ""}
    install = subprocess.run(["bash", "scripts/setup.sh"], cwd=context, env=env,
                             capture_output=True, text=True, timeout=900)
    assert install.returncode == 0, install.stderr[-3000:]
    # Nothing of the test extras came along.
    listing = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "list"],
                             capture_output=True, text=True, timeout=120).stdout
    assert not re.search(r"(?im)^(pytest|schemathesis|softioc)\s", listing), listing
    assert re.search(r"(?im)^sanic\s", listing)
    server = MainProcess(["--workers", "1"],
                         {**child_env(TANGO_HOST=control_system.tango_host)},
                         tmp_path / "main.log", python=str(venv / "bin" / "python"),
                         root=context)
    try:
        assert server.wait_ready("/health/live").json() == {"status": "live"}
        assert server.get("/health/ready").status == 200
        assert server.get("/swagger/rc3.yaml").status == 200  # the swagger/ files are in
    finally:
        assert server.stop() == 0
    assert not os.path.exists(context / ".venv")  # the image's venv is where ENV says
