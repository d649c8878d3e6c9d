"""`harness spaces`: what can be measured."""

from __future__ import annotations

from rich.table import Table

from harness.cli.common import cli_errors, console


@cli_errors
def spaces() -> None:
    """List the search spaces, their size and key columns."""
    from harness.models.spaces import SPACES

    table = Table(title="search spaces")
    for col in ("name", "architectures", "key columns", "input", "description"):
        table.add_column(col)
    for name, cls in SPACES.items():
        sp = cls()
        table.add_row(name, str(sp.size() or "-"), ", ".join(sp.key_columns),
                      "×".join(map(str, sp.default_input_shape)), sp.description)
    console.print(table)
