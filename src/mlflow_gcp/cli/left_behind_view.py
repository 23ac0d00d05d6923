"""`status` and `down`: what the deployment left behind under other names (see operate/left_behind.py)."""

from __future__ import annotations

LEFT_BEHIND = "left behind (keeps billing)"


def show_left_behind(console, report, *, command: str) -> None:
    """One line per resource left behind, the commands that delete it; `down` says it does not."""
    from rich.markup import escape

    if report.items:
        head = (
            "Left behind by earlier settings (not deleted by `down`, which deletes only what the settings name):"
            if command == "down"
            else "Left behind by earlier settings (the settings no longer name them):"
        )
        console.print(f"\n{head}", soft_wrap=True)
        for item in report.items:
            where = f" ({item.location})" if item.location else ""
            console.print(f"  [yellow]{LEFT_BEHIND}[/] {escape(item.label)}{escape(where)}", soft_wrap=True)
            console.print(
                f"    [dim]to delete it once its data is no longer needed:[/] {escape(item.delete)}", soft_wrap=True
            )
    for what in report.unlisted:
        console.print(f"[dim]Could not list what earlier settings left behind: {escape(what)}[/]", soft_wrap=True)
