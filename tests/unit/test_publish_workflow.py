"""The publishing workflow a project gets (.github/workflows/publish.yml,
from the kit's project templates): GitHub Actions' format, and each step the
release relies on. The end-to-end test runs the same steps against the local
registry (tests/e2e/test_publish.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from plugin.bundle._platform import ARCHES

TEMPLATE = (
    Path(__file__).resolve().parents[2]
    / "plugin/bundle/templates/init/common/dot-github/workflows/publish.yml.tmpl"
)

#: The publish job's steps, in order: an action, or a named run step.
PUBLISH_STEPS = [
    "actions/checkout@v4",
    "actions/setup-python@v5",
    "docker/setup-qemu-action@v3",
    "install the kit",
    "build every architecture",
    "log in to the registry",
    "publish the version's tags",
]


def render_workflow(short: str, kit_version: str) -> str:
    """publish.yml as a new project gets it: the template rendered with the
    delimiters of the kit's project templates (``[[ name ]]``)."""
    import jinja2

    env = jinja2.Environment(
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        variable_start_string="[[",
        variable_end_string="]]",
        block_start_string="[%",
        block_end_string="%]",
        comment_start_string="[#",
        comment_end_string="#]",
    )
    return env.from_string(TEMPLATE.read_text()).render(short=short, kit_version=kit_version)


def load_workflow(text: str) -> dict[str, Any]:
    """publish.yml as GitHub reads it; YAML 1.1 reads the key ``on`` as True."""
    data = yaml.safe_load(text)
    assert isinstance(data, dict)
    if True in data:
        data["on"] = data.pop(True)
    return data


def step_key(step: dict[str, Any]) -> str:
    return str(step.get("uses") or step.get("name"))


@pytest.fixture(scope="module")
def workflow() -> dict[str, Any]:
    text = render_workflow("myvol", "9.9.9")
    assert "docker.io/acme/myvol" in text  # the comment shows the project's own name
    return load_workflow(text)


def test_it_runs_on_version_tags_only(workflow: dict[str, Any]) -> None:
    assert workflow["name"] == "publish"
    assert workflow["on"] == {"push": {"tags": ["v*"]}}
    assert sorted(workflow["jobs"]) == ["publish", "test"]


def test_the_tests_pass_first(workflow: dict[str, Any]) -> None:
    test = workflow["jobs"]["test"]
    assert test["runs-on"] == "ubuntu-latest"
    assert [s.get("uses") or s.get("run") for s in test["steps"]] == [
        "actions/checkout@v4",
        "actions/setup-python@v5",
        'python -m pip install "docker-plugin-kit[bundle]==9.9.9" pytest',
        "make test",
    ]
    assert workflow["jobs"]["publish"]["needs"] == "test"


def test_the_publish_job_and_each_step_it_relies_on(workflow: dict[str, Any]) -> None:
    job = workflow["jobs"]["publish"]
    assert job["runs-on"] == "ubuntu-latest"
    assert job["env"] == {
        "PLUGIN_REPOSITORY": "${{ vars.PLUGIN_REPOSITORY }}",
        # Every architecture the builder makes.
        "ARCHES": " ".join(ARCHES),
    }
    steps = {step_key(s): s for s in job["steps"]}
    assert [step_key(s) for s in job["steps"]] == PUBLISH_STEPS
    assert steps["actions/setup-python@v5"]["with"] == {"python-version": "3.11"}
    assert steps["install the kit"]["run"] == (
        'python -m pip install "docker-plugin-kit[bundle]==9.9.9"'
    )
    build = steps["build every architecture"]["run"]
    assert 'docker-plugin-kit --arch "$arch" build' in build
    assert "for arch in $ARCHES" in build
    login = steps["log in to the registry"]
    assert login["env"] == {
        "REGISTRY_USER": "${{ secrets.REGISTRY_USER }}",
        "REGISTRY_TOKEN": "${{ secrets.REGISTRY_TOKEN }}",
    }
    assert "--password-stdin" in login["run"]  # never a token on a command line
    push = steps["publish the version's tags"]["run"]
    assert 'version="${GITHUB_REF_NAME#v}"' in push
    assert 'docker-plugin-kit --name "$PLUGIN_REPOSITORY" push $tags "$version" latest' in push


def test_every_run_step_is_valid_bash(workflow: dict[str, Any]) -> None:
    scripts = [s["run"] for job in workflow["jobs"].values() for s in job["steps"] if "run" in s]
    assert len(scripts) == 6
    for script in scripts:
        checked = subprocess.run(["bash", "-n", "-c", script], capture_output=True, text=True)
        assert checked.returncode == 0, (script, checked.stderr)


def test_the_tags_it_publishes(workflow: dict[str, Any]) -> None:
    """The push step's tags for v1.2.0: one per architecture, the version
    and latest (amd64, by the tag convention)."""
    job = workflow["jobs"]["publish"]
    push = next(s["run"] for s in job["steps"] if s.get("name") == "publish the version's tags")
    script = push.replace("docker-plugin-kit ", "echo docker-plugin-kit ")
    out = subprocess.run(
        ["bash", "-e", "-c", script],
        env={"GITHUB_REF_NAME": "v1.2.0", "ARCHES": job["env"]["ARCHES"],
             "PLUGIN_REPOSITORY": "docker.io/acme/myvol", "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert out.split() == [
        "docker-plugin-kit", "--name", "docker.io/acme/myvol", "push",
        "1.2.0-amd64", "1.2.0-arm64", "1.2.0", "latest",
    ]  # fmt: skip


def test_init_writes_it_into_every_new_project(tmp_path: Path) -> None:
    from plugin.bundle._init import TYPES, init_project

    for kind in TYPES:
        root = tmp_path / kind
        init_project(root, kind, name=f"acme/my{kind}", kit_version="9.9.9")
        written = (root / ".github/workflows/publish.yml").read_text()
        assert written == render_workflow(f"my{kind}", "9.9.9"), kind
