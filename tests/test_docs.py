"""The user manual (docs/) against the code: every TOML example in it is a
valid configuration, every key the configuration parser accepts is
documented, every metric the server exports is named, and the links between
the pages resolve."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from sipconf.config import ConfigError, parse_config
from support import REPO

DOCS = REPO / "docs"
PAGES = sorted(DOCS.glob("*.md"))
MANUAL = "\n".join(page.read_text() for page in PAGES)


def toml_examples(text: str) -> list[str]:
    return re.findall(r"```toml\n(.*?)```", text, re.S)


@pytest.mark.parametrize("page", [p.name for p in PAGES] + ["../README.md"])
def test_every_toml_example_is_a_valid_configuration(page):
    examples = toml_examples((DOCS / page).read_text())
    for example in examples:
        try:
            parse_config(tomllib.loads(example))
        except ConfigError as error:
            # An example may name files of an installation (a certificate under
            # /etc/sipconf): that they are missing here is the only excuse.
            real = [p for p in error.problems if not re.search(r": /etc/\S+: no such file$", p)]
            if real:
                pytest.fail(f"{page}: example is invalid: {real}\n{example}")


def _known(table_toml: str, marker: str) -> list[str]:
    """The names the parser lists for an unknown key in ``table_toml``
    (its "(known keys: ...)" / "(known tables: ...)" hint)."""
    with pytest.raises(ConfigError) as raised:
        parse_config(tomllib.loads(table_toml))
    for problem in raised.value.problems:
        found = re.search(rf"\({marker}: ([^)]*)\)", problem)
        if found:
            return [name.strip() for name in found.group(1).split(",")]
    raise AssertionError(f"no '{marker}' hint in {raised.value.problems}")


def test_every_configuration_table_and_key_is_documented():
    # Asked of the parser itself, so a key added to config.py without a line
    # in the manual fails here.
    junk = "zzzqqq = 1\n"
    tables = _known(junk, "known tables")
    assert {"server", "rooms", "security"} <= set(tables)
    shapes = {name: f"[{name}]\n{junk}" for name in tables}
    for name in ("extensions", "trunks", "rooms"):
        shapes[name] = f"[[{name}]]\n{junk}"
    shapes["trunks.register"] = '[[trunks]]\nname = "t"\n[trunks.register]\n' + junk
    shapes["rooms.conferences"] = '[[rooms]]\nextension = "8"\n[[rooms.conferences]]\n' + junk
    undocumented = []
    for table, text in shapes.items():
        if not re.search(rf"\[\[?{re.escape(table)}\]\]?", MANUAL):
            undocumented.append(f"table [{table}]")
        for key in _known(text, "known keys"):
            if f"`{key}`" not in MANUAL:
                undocumented.append(f"[{table}] {key}")
    assert not undocumented, f"not in docs/: {undocumented}"


def test_every_metric_is_documented():
    names = set(re.findall(r'"(sipconf_[a-z_]+)"', (REPO / "sipconf" / "metrics.py").read_text()))
    names |= set(re.findall(r'watch\("(sipconf_[a-z_]+)"', (REPO / "sipconf" / "server.py").read_text()))
    assert len(names) > 10
    # Counters are exported with _total; histograms' recent-quantile gauges end in _recent_seconds.
    missing = [n for n in sorted(names) if n not in MANUAL and f"{n}_total" not in MANUAL]
    assert not missing, f"metrics not in docs/: {missing}"


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"(?m)^#+ (.*)$", re.sub(r"(?s)```.*?```", "", page.read_text()))
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_links_between_pages_resolve():
    broken = []
    for page in [*PAGES, REPO / "README.md"]:
        for target, anchor in re.findall(r"\]\(([^)#\s]*)(?:#([^)\s]*))?\)", page.read_text()):
            if "://" in target:
                continue
            path = page.parent / target if target else page
            if not path.exists():
                broken.append(f"{page.name} -> {target}")
            elif anchor and anchor not in _anchors(path):
                broken.append(f"{page.name} -> {target}#{anchor}")
    assert not broken, broken
