"""The examples in the docstrings of every module of ``sbicluster`` and ``simulators`` run and give
the output they show.

One test per module (each docstring runs in a copy of the module's globals, with ELLIPSIS and
NORMALIZE_WHITESPACE); a module without examples passes when it imports. Modules that only rebuild the shipped tables or PSFs need optional
build-time packages (:data:`BUILD_TIME_MODULES`); their tests are skipped when those are missing.
An example that needs big data or a GPU is marked ``# doctest: +SKIP`` in its docstring.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import sbicluster
import simulators

BUILD_TIME_MODULES = {
    "simulators.tables.build": ("astrolachesis", "sedpy"),
    "simulators.tables.sedfit": ("astrolachesis", "sedpy"),
}
"""Modules for ``python -m`` table and PSF builds, and the optional packages they need."""

OPTIONFLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _module_names() -> list[str]:
    names = []
    for package in (sbicluster, simulators):
        names.append(package.__name__)
        names.extend(
            info.name for info in pkgutil.walk_packages(package.__path__, package.__name__ + ".")
        )
    return sorted(names)


@pytest.mark.parametrize("module_name", _module_names())
def test_docstring_examples(module_name: str) -> None:
    for package in BUILD_TIME_MODULES.get(module_name, ()):
        pytest.importorskip(package, reason=f"{module_name} needs the build-time {package}")
    module = importlib.import_module(module_name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=OPTIONFLAGS)
    tests = [t for t in finder.find(module, module_name) if t.examples]
    failures = []
    for test in sorted(tests, key=lambda t: t.name):
        lines: list[str] = []
        result = runner.run(test, out=lines.append, clear_globs=True)
        if result.failed:
            failures.append("".join(lines))
    assert not failures, "\n".join(failures)


def test_every_build_time_module_exists() -> None:
    assert set(BUILD_TIME_MODULES) <= set(_module_names())
