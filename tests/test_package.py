"""The package as a wheel: it must work from site-packages, away from this repository.

The wheel is built from a copy of the project's files (building in place would write build/ and
*.egg-info into the working tree), installed into a directory of its own, and imported with
Python's site machinery off (``-S``), so neither the editable install nor the repository can stand
in for what the wheel lacks.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig

from tests.bridge import ROOT, child_env

CHECK = """
import json, sys
import mtango
from mtango.api.swagger import SWAGGER_DIR, documents
from mtango.api import web
from mtango.config import Config, load_config
config = load_config(env={"TANGO_HOST": "db.example:10000"})
page = web.page(config).body.decode()
print(json.dumps({
    "web_dir": str(web.WEB_DIR),
    "web_files": sorted(name for name in web.ASSETS if web.asset(name).body),
    "page_ok": "/web/app.js?v=" in page and "{{" not in page,
    "package": mtango.__file__,
    "port": config.port,
    "documents": sorted(documents(config)),
    "swagger_dir": str(SWAGGER_DIR),
    "top_level_conf": "conf" in sys.modules,
}))
"""


def test_the_wheel_carries_its_defaults_api_descriptions_and_web_page(tmp_path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE", "main.py", "conf.py"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "mtango", source / "mtango",
                    ignore=shutil.ignore_patterns("__pycache__"))
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "--wheel-dir", str(tmp_path / "dist"), str(source)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    wheel, = (tmp_path / "dist").glob("mtango_bridge-*.whl")
    site = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target", str(site),
         str(wheel)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    # The wheel first, then the dependencies of this environment (but not its editable install).
    env = child_env(PYTHONPATH=f"{site}:{sysconfig.get_paths()['purelib']}")
    run = subprocess.run([sys.executable, "-S", "-c", CHECK], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    found = json.loads(run.stdout)
    assert found["package"].startswith(str(site)), found
    assert found["port"] == 8000
    assert found["swagger_dir"].startswith(str(site)), found
    expected = sorted(f"{p.stem}.{kind}" for p in (ROOT / "swagger").glob("*.yaml")
                      for kind in ("json", "yaml"))
    assert expected and found["documents"] == expected
    assert not found["top_level_conf"], "the package needs a top-level conf module"
    # The web page's files are package data too (tests/test_web_page.py serves them).
    assert found["web_dir"].startswith(str(site)), found
    assert found["web_files"] == sorted(p.name for p in (ROOT / "mtango" / "web").iterdir()
                                        if p.name != "index.html")
    assert found["page_ok"]
