"""NLP: cleaning mail text, matching messages to the CRM and proposing what is missing. Pure.

spaCy's own package imports its command line (`from .cli.info import info`), and with it weasel,
httpx and typer's project commands: about 15 MB in every process that matches mail, for a CLI mailsync
never runs (upstream: explosion/spaCy#13721, open). Importing this package arranges that spaCy, when
first imported, gets a stand-in for `spacy.cli.info` alone: `spacy.info()` still works (it imports the
real one when called), and so does `import spacy.cli`. Nothing changes if spaCy was imported before.
"""

from __future__ import annotations

import sys
import types
from importlib.abc import Loader, MetaPathFinder
from importlib.machinery import PathFinder
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence
    from importlib.machinery import ModuleSpec

_CLI_INFO = "spacy.cli.info"


def _info(*args: Any, **kwargs: Any) -> Any:
    """spacy.info, loading spaCy's command line only when someone asks for it."""
    from spacy.cli.info import info  # noqa: PLC0415 - the point: only when called

    return info(*args, **kwargs)


class _WithoutCli(Loader):
    def __init__(self, loader: Loader) -> None:
        self._loader = loader

    def __getattr__(self, name: str) -> Any:  # the rest (resources, source) as the real loader has it
        return getattr(self._loader, name)

    def create_module(self, spec: ModuleSpec) -> types.ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        stand_in = types.ModuleType(_CLI_INFO)
        stand_in.info = _info  # type: ignore[attr-defined]
        sys.modules[_CLI_INFO] = stand_in
        try:
            self._loader.exec_module(module)
        finally:
            if sys.modules.get(_CLI_INFO) is stand_in:
                del sys.modules[_CLI_INFO]


class _SpacyFinder(MetaPathFinder):
    """Finds spaCy as the path finder does, once, with the loader above around the real one."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname != "spacy":
            return None
        sys.meta_path.remove(self)
        spec = PathFinder.find_spec(fullname, path, target)
        if spec is not None and spec.loader is not None:
            spec.loader = _WithoutCli(spec.loader)
        return spec


if "spacy" not in sys.modules and not any(isinstance(f, _SpacyFinder) for f in sys.meta_path):
    sys.meta_path.insert(0, _SpacyFinder())
