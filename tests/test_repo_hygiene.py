"""What a user picking up a clean clone relies on: no machine paths, declared dependencies that
agree with requirements.txt and cover every import, the README's CI blocks, the license files, and
a demo-model page that is what its records say."""

import ast
import json
import re
import subprocess
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the test extra installs tomli
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
README = (ROOT / "README.md").read_text()

TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".toml", ".json", ".js", ".txt", ".cfg", ".ini", ".sh", ""}
# A home, a mount, a CI machine's work folder, a shared temp folder, a Windows drive: paths that
# exist on one machine only (tests use tmp_path, code takes its folders from the user).
MACHINE_PATH = re.compile(r"(?<![\w.$])/(?:work|home|Users|root|mnt|opt|srv|tmp)/[\w.-]+"
                          r"|\b[A-Za-z]:\\{1,2}Users\\")
# Imports that no extra declares, each with why: optional backends that say how to install them.
UNDECLARED_OK = {"easyocr": "optional text detector; its error names `pip install easyocr`"}
# Imports whose package is not installed here, mapped to the distribution that provides them.
NOT_INSTALLED_HERE = {"xformers": "xformers", "easyocr": "easyocr"}


def _repository_text_files():
    """The files git tracks or would add (ignored run outputs, caches and virtual envs are not
    part of the repository), as git lists them rather than by guessing folder names."""
    try:
        listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT,
                                capture_output=True, text=True, check=True, timeout=60).stdout
    except (OSError, subprocess.CalledProcessError) as error:
        pytest.skip(f"not a git checkout ({error}): the files of the repository cannot be listed")
    for name in filter(None, listed.split("\0")):
        path = ROOT / name
        if path.is_file() and path.suffix in TEXT_SUFFIXES:
            yield path


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_no_absolute_machine_path_in_the_repository():
    # (the samples are split so that these lines are not matches themselves)
    for machine in ('open("/' + 'tmp/x.png")', "/" + "home/me/models", "C:\\" + "Users\\me", "--out /" + "work/run"):
        assert MACHINE_PATH.search(machine), machine
    for fine in ('tmp_path / "x.png"', "models/vdit_default", "$TMPDIR/x", "~/.cache/x", "a/tmp/b"):
        assert not MACHINE_PATH.search(fine), fine
    found = []
    for path in _repository_text_files():
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if MACHINE_PATH.search(line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:100]}")
    assert not found, "absolute machine paths (use paths relative to the repository):\n" + "\n".join(found)


def test_requirements_txt_is_pyproject_dependencies_without_torch():
    lines = [line.strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    pinned = [line for line in lines if line and not line.startswith("#")]
    declared = [d for d in PYPROJECT["project"]["dependencies"] if _name(d) != "torch"]
    assert pinned == declared, "requirements.txt must list pyproject's dependencies (torch aside), same order"


def test_every_third_party_import_is_declared():
    declared = {_name(d) for d in PYPROJECT["project"]["dependencies"]}
    for extra in PYPROJECT["project"]["optional-dependencies"].values():
        declared |= {_name(d) for d in extra}
    distributions = packages_distributions()
    own = {"easyanimate_core", "training", "nodes"}
    missing = {}
    for path in [ROOT / "__init__.py", *(p for d in own for p in (ROOT / d).rglob("*.py"))]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            else:
                continue
            for module in {n.split(".")[0] for n in names} - set(sys.stdlib_module_names) - own:
                provided = distributions.get(module) or [NOT_INSTALLED_HERE.get(module, module)]
                if module not in UNDECLARED_OK and not {_name(p) for p in provided} & declared:
                    missing.setdefault(module, str(path.relative_to(ROOT)))
    assert not missing, f"imported but declared in no dependency list of pyproject.toml: {missing}"


def test_readme_ci_blocks_install_pinned_torch_first_and_run_every_test():
    def block(name):
        match = re.search(rf"^<!-- ci:{name} -->\n```bash\n(.+?)\n```\n<!-- /ci:{name} -->$", README, re.M | re.S)
        assert match, f"README lost its ci:{name} block (.ci/run runs it)"
        return match.group(1)

    main = block("main")
    assert main.index("pip install torch==2.13.0") < main.index('pip install -e ".[train,test]"')
    assert re.fullmatch(r"\. \.venv/bin/activate && python -m pytest", block("tests"))  # no marker filter
    assert len(README.splitlines()) < 250


def test_one_version_one_product_name(pack):
    import easyanimate_core

    assert {cls.CATEGORY.split("/")[0] for cls in pack.NODE_CLASS_MAPPINGS.values()} == {"VideoDiT"}
    assert all(node_id.startswith("VDiT_") for node_id in pack.NODE_CLASS_MAPPINGS)  # saved workflows use them

    assert easyanimate_core.__version__ == PYPROJECT["project"]["version"]
    assert PYPROJECT["project"]["description"].startswith("VideoDiT")
    assert PYPROJECT["tool"]["comfy"]["DisplayName"].startswith("VideoDiT") and README.startswith("# VideoDiT")


def test_license_files_ship_and_agree_with_pyproject():
    assert PYPROJECT["project"]["license"] == {"text": "Apache-2.0"}
    license_text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    assert "END OF TERMS AND CONDITIONS" in license_text
    notice = (ROOT / "NOTICE").read_text()
    for upstream in ("EasyAnimate", "PixArt-alpha", "AnimateDiff"):
        assert upstream in notice


def test_demo_model_page_is_written_from_its_records():
    from training.demo import report

    page = report.render(json.loads(report.PROVENANCE.read_text()), json.loads(report.EVALUATION.read_text()))
    assert report.PAGE.read_text() == page, "docs/demo_model.md is stale: run python -m training.demo.report"
    evaluation = json.loads(report.EVALUATION.read_text())
    assert evaluation["model"] == report.MODEL and evaluation["settings"]["seeds"] == report.EVAL_SEEDS
