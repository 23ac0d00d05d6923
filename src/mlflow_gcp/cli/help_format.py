"""How `--help` reads: options grouped in panels (rich_help_panel), a flag without the `<bool>` Typer would show
in the column of the value it expects."""

from __future__ import annotations

from typer.core import TyperOption

_display_type_rich = TyperOption.display_type_rich


def _no_bool(self: TyperOption, ctx) -> str | None:
    return None if self.is_flag else _display_type_rich(self, ctx)


TyperOption.display_type_rich = _no_bool  # type: ignore[method-assign]
