"""Keeping a command's imports to what it uses.

pandas, when it is installed (and a data scientist's machine has it),
is imported by pyarrow at its first conversion of a Python value and
whenever it asks whether a value is a DataFrame: ~0.3 s of CPU, more than
most commands take in all.  No command hands pyarrow a DataFrame, so the
command line runs with pandas hidden (`run` in __init__.py); steps run in
processes of their own and see it as usual.  numpy is hidden too by the
commands that only list (pyarrow loads it at import, ~90 ms, and needs it
only to convert arrays), and so is cloudpickle, which pyarrow imports
in its place of pickle (~10 ms, with logging) and a listing never uses.
Logging is configured when something imports it (`when_imported`), not
imported to be configured: most commands never log.
"""

from __future__ import annotations

import contextlib
import sys
from importlib.machinery import PathFinder
from typing import Callable


class _Hidden:
    """An import finder that makes `import NAME` fail for some packages."""

    def __init__(self, names: set[str]):
        self.names = names

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


@contextlib.contextmanager
def hidden(*names: str):
    """While the block runs, `import` fails for these packages unless they
    are imported already."""
    finder = _Hidden({n for n in names if n not in sys.modules})
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)


class _AfterImport:
    """An import finder that loads one module as usual, then hands it to `then`."""

    def __init__(self, name: str, then: Callable):
        self.name, self.then = name, then

    def find_spec(self, name, path=None, target=None):
        if name != self.name:
            return None
        sys.meta_path.remove(self)
        spec = PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            load = spec.loader.exec_module

            def exec_module(module):
                load(module)
                self.then(module)

            spec.loader.exec_module = exec_module
        return spec


def when_imported(name: str, then: Callable) -> None:
    """Call `then(module)` once the module `name` is imported: now if it is already."""
    if name in sys.modules:
        then(sys.modules[name])
    else:
        sys.meta_path.insert(0, _AfterImport(name, then))
