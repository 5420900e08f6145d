"""What an invalid configuration reports: problems, each with the key path it concerns."""

from __future__ import annotations

from collections.abc import Iterable

#: ``(key_path, message)``; the key path is ``""`` for problems of the whole file.
Problem = tuple[str, str]


class ConfigError(ValueError):
    """An invalid configuration: every problem found, not just the first."""

    def __init__(self, problems: Iterable[Problem], source: str = "<string>") -> None:
        self.problems: list[Problem] = list(problems)
        self.source = source
        super().__init__(str(self))

    def lines(self) -> list[str]:
        """One line per problem, key path first (the source for whole-file problems)."""
        return [f"{key or self.source}: {message}" for key, message in self.problems]

    def __str__(self) -> str:
        return "\n".join(self.lines())
