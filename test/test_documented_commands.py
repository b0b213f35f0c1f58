"""Every command the documentation's shell blocks give for this package is one it takes.

README.md and the results files under benchmarks/ give the commands that remake their
figures; a flag renamed or removed in the code would leave a command that fails for the
reader. Each command found in a fenced shell block is parsed by the real parser of its
subcommand (nothing runs). Shell variables are given the value the block assigns them
(``NAME=value``, or the first word of ``for NAME in ...``). The ROS commands are checked
against what the package declares: ``ros2 launch seg_perception FILE name:=value`` needs FILE
in launch/ declaring each argument, ``ros2 param set /segmentation_node NAME`` a parameter
the running node lets change.
"""
import argparse
import glob
import importlib
import os
import re
import shlex

import pytest

from seg_perception.cli import COMMANDS
from seg_perception.ros import params
from test_launch_files import argument_names

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS_FILES = glob.glob(os.path.join(REPO, 'benchmarks', '*.md'))
DOCS = ['README.md', 'config/train/tries/README.md',
        *sorted(os.path.relpath(path, REPO) for path in RESULTS_FILES)]
COMMAND = re.compile(r'(?:^|&&|;|\|)\s*(?:[A-Z_]+=\S+\s+)*'
                     r'(?:seg-perception|python3? -m seg_perception\.cli)\s+(.*)$')
SHELL_OPERATORS = {'&&', '||', '|', ';', '&'}


def shell_blocks(text):
    """The contents of the fenced blocks marked bash/sh/shell/console (or unmarked)."""
    blocks, current, language = [], None, ''
    for line in text.splitlines():
        if line.strip().startswith('```'):
            if current is None:
                current, language = [], line.strip()[3:].strip()
            else:
                if language in ('', 'bash', 'sh', 'shell', 'console'):
                    blocks.append('\n'.join(current))
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def block_variables(block):
    variables = {}
    for name, value in re.findall(r'^\s*([A-Z_][A-Z0-9_]*)=(\S+)\s*$', block, re.M):
        variables[name] = value
    for name, words in re.findall(r'\bfor ([A-Za-z_]\w*) in ([^;]+);', block):
        variables[name] = words.split()[0]
    return variables


def documented_lines():
    """(doc, line) of every command line of the shell blocks, continuations joined,
    comments dropped, variables the block sets filled in."""
    for doc in DOCS:
        with open(os.path.join(REPO, doc), encoding='utf-8') as stream:
            text = stream.read()
        for block in shell_blocks(text):
            variables = block_variables(block)
            for line in re.sub(r'\\\n\s*', ' ', block).splitlines():
                line = re.sub(r'\s#.*$', '', line).strip().removeprefix('$ ')
                line = re.sub(r'\$\([^)]*\)', 'OUTPUT_OF_COMMAND', line)   # $(ros2 pkg ...)
                yield doc, re.sub(r'\$\{?([A-Za-z_]\w*)\}?',
                                  lambda m: variables.get(m.group(1), m.group(0)), line)


def words_of(command):
    """The words of a command up to the first shell operator or redirection."""
    words = shlex.split(command)
    for index, word in enumerate(words):
        if word in SHELL_OPERATORS or word.startswith(('>', '2>')):
            return words[:index]
    return words


def documented_commands(pattern):
    """pytest params of the words after ``pattern``'s group 1 in every documented line."""
    return [pytest.param(words_of(match.group(1)), id=f'{doc}: {match.group(1)[:60]}')
            for doc, line in documented_lines()
            for match in [pattern.search(line)] if match]


COMMANDS_FOUND = documented_commands(COMMAND)
LAUNCHES = documented_commands(re.compile(r'ros2 launch seg_perception\s+(.*)$'))
PARAM_SETS = documented_commands(re.compile(r'ros2 param set /segmentation_node\s+(.*)$'))


def test_the_documentation_gives_commands_to_check():
    names = {words[0] for words in (param.values[0] for param in COMMANDS_FOUND) if words}
    # If the extraction broke, this would pass vacuously: the docs use most subcommands.
    assert {'train', 'evaluate', 'export', 'quantize', 'bag-eval', 'demo'} <= names, names


@pytest.mark.parametrize('words', COMMANDS_FOUND)
def test_documented_command_parses(words):
    index = next((i for i, word in enumerate(words) if word in COMMANDS), None)
    assert index is not None, f'no subcommand in: {" ".join(words)}'
    name = words[index]
    module = importlib.import_module('seg_perception.commands.' + name.replace('-', '_'))
    parser = argparse.ArgumentParser(prog=f'seg-perception {name}')
    module.configure_parser(parser)
    try:
        parser.parse_args(words[index + 1:])
    except SystemExit:
        pytest.fail(f'does not parse: seg-perception {" ".join(words)}')


def test_the_documentation_gives_ros_commands_to_check():
    assert len(LAUNCHES) >= 5 and PARAM_SETS


@pytest.mark.parametrize('words', LAUNCHES)
def test_documented_launch_names_a_launch_file_and_its_arguments(words):
    filename, arguments = words[0], words[1:]
    assert os.path.isfile(os.path.join(REPO, 'launch', filename)), filename
    declared = argument_names(filename)
    for argument in arguments:
        name, assigns, _ = argument.partition(':=')
        assert assigns and name in declared, (
            f'{filename} has no launch argument {name!r} (it declares {sorted(declared)})')


@pytest.mark.parametrize('words', PARAM_SETS)
def test_documented_parameter_change_is_one_the_running_node_takes(words):
    assert words[0] in params.SWAPPABLE, f'{words[0]} is read-only while the node runs'
