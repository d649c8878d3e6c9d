"""`harness spaces`: what can be measured."""

from __future__ import annotations

from rich.table import Table

from harness.cli.common import cli_errors, console, esc, print_table


def count_text(n: int | None) -> str:
    """15,625 or ≈ 9.8 × 10^20: a 21-digit integer tells a reader nothing."""
    if n is None:
        return "-"
    if n < 10_000_000:
        return f"{n:,}"
    mantissa, exponent = f"{n:.1e}".split("e")
    return f"≈ {mantissa} × 10^{int(exponent)}"


@cli_errors
def spaces() -> None:
    """List the search spaces, their size and key columns."""
    from harness.models.spaces import SPACES
    from harness.plugins import load_plugins

    load_plugins()  # spaces that plug-ins add are listed too

    table = Table(title="search spaces")
    for col in ("name", "architectures", "key columns", "input", "description"):
        table.add_column(col)
    examples = []
    for name, cls in SPACES.items():
        sp = cls()
        table.add_row(name, count_text(sp.size()), ", ".join(sp.key_columns),
                      "×".join(map(str, sp.default_input_shape)) if sp.default_input_shape else "-", sp.description)
        try:  # a key to type: the column names alone did not say how one is written
            examples.append((name, sp.sample(1, 0)[0].key))
        except Exception:  # noqa: BLE001 (a plug-in space that cannot sample still lists)
            pass
    print_table(table)
    console.print("an architecture key of each, as --arch takes it (with --space NAME; nb201 also takes an index):",
                  highlight=False)
    for name, key in examples:
        console.print(f"  {esc(name)}: {esc(key)}", highlight=False, overflow="fold")
