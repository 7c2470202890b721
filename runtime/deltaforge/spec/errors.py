"""SpecError: every problem with a manifest, reported at once with the path that holds it.

A user fixing a manifest wants the whole list in one run, each line pointing at a field
(`spec.sinks[1].kafka.topic`), not a traceback or only the first mistake.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final, NamedTuple

# A quoted value longer than this is shortened in messages: a 10 MB name must not make a 10 MB
# error, in a terminal, a log line or a Kubernetes condition.
_LONG_QUOTED: Final = re.compile(r"""(['"])([^'"]{80})[^'"]{20,}\1""")
MAX_LINE: Final = 1000


def shorten(text: str) -> str:
    """`text` with long quoted values cut to their first 80 characters, and at most MAX_LINE long."""
    text = _LONG_QUOTED.sub(lambda match: f"{match[1]}{match[2]}...{match[1]} (shortened)", text)
    return text if len(text) <= MAX_LINE else f"{text[: MAX_LINE - 15]}... (shortened)"


class Issue(NamedTuple):
    """One problem: the dotted path of the field (empty for the whole document) and a message."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class SpecError(Exception):
    """A manifest (or a credential it references) is invalid; a user error, never a bug."""

    def __init__(self, issues: Iterable[Issue | tuple[str, str]], *, source: str = "<manifest>") -> None:
        self.issues = [Issue(shorten(path), shorten(message)) for path, message in issues]
        self.source = source
        super().__init__(str(self))

    def lines(self) -> list[str]:
        """One `path: message` line per issue, ready to print."""
        return [str(issue) for issue in self.issues]

    def __str__(self) -> str:
        return "\n".join(self.lines())


def render_path(loc: Iterable[str | int]) -> str:
    """Render a location as users write it in a manifest: `spec.sinks[1].kafka.topic`."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part.replace("_", "").replace("-", "").isalnum():
            path += f".{part}" if path else part
        else:
            path += f"[{part!r}]"
    return path
