"""The package's architecture, checked: import contracts, folders by job, a README that maps them.

The contracts live in .importlinter (layers, no cycles, rclpy / TensorRT / torch only where
they belong) and are checked by import-linter, a well-kept tool, not by hand-written AST walks.
"""
import os
import re
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(REPO, 'seg_perception')
MAX_TOP_LEVEL_MODULES = 8


def _lint_imports():
    found = (shutil.which('lint-imports')
             or os.path.join(os.path.dirname(sys.executable), 'lint-imports'))
    if not os.path.exists(found):
        pytest.fail('import-linter is not installed (pip install -e ".[dev]")')
    return found


def test_import_contracts_hold():
    # PYTHONPATH: the checkout under test, not an installed copy of the package.
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
    done = subprocess.run([_lint_imports(), '--config', os.path.join(REPO, '.importlinter')],
                          cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert 'BROKEN' not in done.stdout and 'KEPT' in done.stdout


def test_a_broken_contract_is_reported(tmp_path):
    """The check can fail: a core module that imports a folder above it breaks the layers."""
    copy = tmp_path / 'repo'
    shutil.copytree(PACKAGE, copy / 'seg_perception',
                    ignore=shutil.ignore_patterns('assets', '__pycache__'))
    shutil.copy(os.path.join(REPO, '.importlinter'), copy / '.importlinter')
    with open(copy / 'seg_perception' / 'files.py', 'a') as stream:
        stream.write('\nfrom seg_perception.replay import report  # noqa\n')
    env = dict(os.environ, PYTHONPATH=str(copy))
    done = subprocess.run([_lint_imports()], cwd=copy, env=env, capture_output=True, text=True)
    assert done.returncode != 0
    assert 'seg_perception.files is not allowed to import seg_perception.replay' in done.stdout


def _top_level_modules():
    return sorted(n for n in os.listdir(PACKAGE)
                  if n.endswith('.py') and n != '__init__.py')


def _folders():
    return sorted(n for n in os.listdir(PACKAGE)
                  if os.path.isfile(os.path.join(PACKAGE, n, '__init__.py')))


def test_the_top_level_holds_only_the_shared_core():
    assert len(_top_level_modules()) <= MAX_TOP_LEVEL_MODULES, _top_level_modules()


def test_readme_layout_names_every_folder_and_core_module():
    with open(os.path.join(REPO, 'README.md')) as stream:
        readme = stream.read()
    layout = re.search(r'^## Layout\n(.*?)(?=^## )', readme, re.M | re.S)
    assert layout, 'README.md has no "## Layout" section'
    text = layout.group(1)
    missing = [f'{name}/' for name in _folders() if not re.search(rf'\b{name}/', text)]
    missing += [name for name in _top_level_modules() if name not in text]
    assert not missing, f'README layout does not mention {missing}'
