"""The house's layers: schema at the bottom, then model, then components, then the wiring and
runners in pipeline/. No import runs back up (a component importing the CLI, the model importing
a component), so each layer can be read, and changed, without the ones above it."""

import ast
import os

import pytest

from tests.helpers import REPO

# Each package, and the packages of ours it may import.
ALLOWED = {
    "schema": set(),
    "model": {"schema"},
    "components": {"schema", "model"},
    "pipeline": {"schema", "model", "components"},
}


def imported_packages(path: str) -> set[str]:
    """Our top-level packages that a module imports, at module level or inside functions."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names & set(ALLOWED)


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_no_import_runs_back_up_the_layers(package):
    wrong = {}
    for name in sorted(os.listdir(os.path.join(REPO, package))):
        if name.endswith(".py"):
            imported = imported_packages(os.path.join(REPO, package, name)) - {package}
            if imported - ALLOWED[package]:
                wrong[f"{package}/{name}"] = sorted(imported - ALLOWED[package])
    assert not wrong, f"imports against the layers: {wrong}"


def test_the_kubeflow_directory_holds_what_is_deployed_not_code():
    assert not [name for name in os.listdir(os.path.join(REPO, "kubeflow")) if name.endswith(".py")]
