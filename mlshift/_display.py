"""What a notebook shows of an endpoint: ``Version`` values and the HTML table.

Everything here reads values already in memory; nothing does I/O, and every value that
reaches HTML is escaped.
"""

from __future__ import annotations

import dataclasses
import html

__all__ = ["Version", "YAMLText", "version_table"]


class YAMLText(str):
    """A YAML string that a notebook shows as a highlighted block."""

    __slots__ = ()

    def _repr_markdown_(self) -> str:
        return f"```yaml\n{self}```"


@dataclasses.dataclass(frozen=True)
class Version:
    """One deployed version as last seen (cached; ``ep.status()`` asks the target).

    Example:
        >>> v2 = ep.deploy(model_v2, "v2")  # doctest: +SKIP
        >>> v2  # doctest: +SKIP
        <Version v2 0% ready>
    """

    name: str
    weight: int
    ready: bool | None
    model_sha256: str
    image: str | None = None
    bundle: str | None = None
    reason: str = ""

    def __repr__(self) -> str:
        ready = {True: "ready", False: "not ready", None: "unknown"}[self.ready]
        return f"<Version {self.name} {self.weight}% {ready}>"

    def _repr_html_(self) -> str:
        return version_table([self])


def version_table(versions: list[Version], title: str = "") -> str:
    from mlshift._colors import version_color

    names = [v.name for v in versions]
    rows = []
    for v in versions:
        color = version_color(v.name, names)
        bar = (
            f'<div style="background:{color};height:0.8em;width:{v.weight}%;'
            f'min-width:{1 if v.weight else 0}px"></div>'
        )
        ready = {True: "✅ ready", False: "❌ not ready", None: "?"}[v.ready]
        if v.reason:
            ready += f" ({html.escape(v.reason)})"
        digest = v.image or (f"sha256:{v.model_sha256[:12]}" if v.model_sha256 else "")
        rows.append(
            f'<tr><td><b style="color:{color}">{html.escape(v.name)}</b></td>'
            f'<td style="text-align:right">{v.weight}%</td>'
            f'<td style="width:10em">{bar}</td><td>{ready}</td>'
            f"<td><code>{html.escape(digest)}</code></td></tr>"
        )
    head = (
        "<tr><th>version</th><th>weight</th><th></th><th>readiness</th><th>image / model</th></tr>"
    )
    caption = f"<caption>{html.escape(title)}</caption>" if title else ""
    body = "".join(rows) or '<tr><td colspan="5">no versions deployed</td></tr>'
    return f"<table>{caption}{head}{body}</table>"
