"""The dashboard's words in Chinese (the default) and English.

Pages are rendered on the server in the language of the ``lang`` cookie (``?lang=en`` or
``?lang=zh`` on any page sets it), so a page reads the same with scripts off and prints in
the chosen language. Every key has both languages (``tests/test_dashboard_http.py`` checks).

The words themselves are a data file, ``static/words.toml`` (one line per key, both languages
side by side), as the console's are (``edgegate/console/static/i18n.json``): translators edit
it without touching code.
"""

from __future__ import annotations

import tomllib
from importlib import resources

LANGS = ("zh", "en")
DEFAULT = "zh"


def _load() -> dict[str, tuple[str, str]]:
    """The catalogue ``static/words.toml`` (packaged with the code; a fault there is a
    packaging fault, raised at import)."""
    raw = (
        resources.files("edgegate.central.dashboard")
        .joinpath("static", "words.toml")
        .read_text("utf-8")
    )
    words: dict[str, tuple[str, str]] = {}
    for key, pair in tomllib.loads(raw).items():
        if not (
            isinstance(pair, list) and len(pair) == 2 and all(isinstance(w, str) for w in pair)
        ):
            raise ValueError(f"words.toml: {key}: expected [Chinese, English], got {pair!r}")
        words[key] = (pair[0], pair[1])
    return words


WORDS = _load()
"""key -> (Chinese, English)."""


def text(lang: str, key: str, **values: object) -> str:
    """The words of ``key`` in ``lang`` with ``values`` filled in; an unknown key is shown
    as itself (a missing word must not break a page)."""
    pair = WORDS.get(key)
    if pair is None:
        return key.format(**values) if values else key
    word = pair[1] if lang == "en" else pair[0]
    return word.format(**values) if values else word
