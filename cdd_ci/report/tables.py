"""Tables for people: fitted to a terminal, or plain lines in a CI log or a pipe.

A terminal is often 80 columns wide, and rich cuts a cell that does not fit with "…": a
status word or a name would be lost. Here cells wrap instead, at spaces first and inside a
word only when a word is wider than its whole column, and no line ends in spaces. A CI log
is read in a browser, which wraps long lines itself: there a table is its rows as aligned
lines, as long as they need to be, never cut, wrapped or padded at the end.

`show` prints anything (a table, a group of texts) the right way for where it goes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.segment import Segment
from rich.table import Table as RichTable
from rich.text import Text

Cell = str | Text
GAP = "  "


@dataclass(frozen=True)
class Column:
    header: str
    right: bool = False
    whole: bool = False
    """Never wrapped (an id, a number, a duration, a yes/no): the other columns give way."""


@dataclass(frozen=True)
class Table:
    columns: Sequence[Column]
    rows: Sequence[Sequence[Cell]]
    title: str = ""


def render(table: Table, *, terminal: bool) -> RenderableType:
    return _for_terminal(table) if terminal else _plain(table)


def show(console: Console, *parts: RenderableType) -> None:
    """Print `parts`: on a terminal fitted to it with no trailing spaces; elsewhere as long
    lines that nothing wraps or cuts (rich would otherwise wrap at its default 80 columns
    and pad every line to that width)."""
    if console.is_terminal:
        console.print(*(Trimmed(part) for part in parts))
    else:
        console.print(*parts, soft_wrap=True)


class Trimmed:
    """A renderable whose lines end at their last visible character: a rich table pads
    every cell, so every row would otherwise end in spaces."""

    def __init__(self, renderable: RenderableType) -> None:
        self.renderable = renderable

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        for line in console.render_lines(self.renderable, options, pad=False):
            yield from _rstrip(line)
            yield Segment.line()


def _rstrip(line: list[Segment]) -> list[Segment]:
    out = list(line)
    while out and not out[-1].control and not out[-1].text.rstrip():
        out.pop()
    if out and not out[-1].control:
        last = out[-1]
        out[-1] = Segment(last.text.rstrip(), last.style, last.control)
    return out


def _for_terminal(table: Table) -> RenderableType:
    return _Fitted(table)


class _Fitted:
    """The table at the terminal's width, column widths chosen here rather than by rich,
    which would squeeze every column alike and so cut short words ("passe…") too."""

    def __init__(self, table: Table) -> None:
        self.table = table

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        table = self.table
        header = [Text(c.header) for c in table.columns]
        cells = [header, *([_text(c) for c in row] for row in table.rows)]
        natural = [max(_widest(r[i], line=True) for r in cells) for i in range(len(header))]
        shortest = [natural[i] if c.whole else max(_widest(r[i], line=False) for r in cells)
                    for i, c in enumerate(table.columns)]
        room = options.max_width - len(GAP) * (len(header) - 1)
        if sum(shortest) > room:
            # too narrow for the columns' words side by side: one field a line, instead
            # of words broken in every column
            yield from _records(table)
            return
        widths = _widths(table.columns, natural, shortest, room)
        rich_table = RichTable(title=table.title or None, title_justify="left",
                               title_style="bold", box=None, header_style="bold",
                               pad_edge=False, padding=(0, len(GAP) // 2))
        for column, width in zip(table.columns, widths, strict=True):
            # "fold", not rich's default "ellipsis": a word wider than its whole column is
            # broken onto the next line rather than cut
            rich_table.add_column(column.header, justify="right" if column.right else "left",
                                  width=width, no_wrap=column.whole, overflow="fold")
        for row in table.rows:
            rich_table.add_row(*row)
        yield rich_table


def _records(table: Table) -> list[Text]:
    out = [Text(table.title, style="bold")] if table.title else []
    for row in table.rows:
        for number, (column, cell) in enumerate(zip(table.columns, row, strict=True)):
            line = Text("" if number == 0 else "  ")
            if column.header:
                line.append(f"{column.header}: ", style="bold")
            out.append(line.append_text(_text(cell)))
    return out


def _widths(columns: Sequence[Column], natural: list[int], shortest: list[int],
            room: int) -> list[int]:
    """Whole columns as wide as their widest cell; then every other column its longest
    word, as far as the room goes (the narrowest first, so a status word is kept whole
    and a long name is what gets broken); then what is left, towards their widest cell."""
    whole = [i for i, c in enumerate(columns) if c.whole]
    rest = [i for i, c in enumerate(columns) if not c.whole]
    widths = list(natural)
    room -= sum(natural[i] for i in whole)
    words = _fill([shortest[i] for i in rest], room)
    more = _fill([natural[i] - w for i, w in zip(rest, words, strict=True)],
                 room - sum(words))
    for i, word, extra in zip(rest, words, more, strict=True):
        widths[i] = max(1, word + extra)
    return widths


def _fill(demands: Sequence[int], room: int) -> list[int]:
    """Share `room` out one column at a time to the one that has least so far (max-min
    fair): no demand gets more than it asks."""
    given = [0] * len(demands)
    while room > 0:
        wanting = [i for i, demand in enumerate(demands) if given[i] < demand]
        if not wanting:
            break
        given[min(wanting, key=lambda i: given[i])] += 1
        room -= 1
    return given


def _widest(cell: Text, *, line: bool) -> int:
    """Its longest line (`line`), or its longest word: how narrow it can be without a
    word broken."""
    parts = cell.plain.splitlines() if line else cell.plain.split()
    return max((cell_len(p) for p in parts), default=0)


def _plain(table: Table) -> Text:
    cells = [[_text(c) for c in row] for row in table.rows]
    header = [Text(c.header) for c in table.columns]
    widths = [max(cell_len(r[i].plain) for r in [header, *cells])
              for i in range(len(table.columns))]
    out = Text()
    if table.title:
        out.append(table.title + "\n", style="bold")
    for number, row in enumerate([header, *cells]):
        out.append_text(_line(row, widths, table.columns, bold=number == 0))
        out.append("\n")
    out.rstrip()
    return out


def _line(row: Iterable[Text], widths: Sequence[int], columns: Sequence[Column], *,
          bold: bool) -> Text:
    parts: list[Text] = []
    for cell, width, column in zip(row, widths, columns, strict=True):
        # a cell's own line breaks would start a line that belongs to no column
        cell = Text(" ".join(cell.plain.split()), style=cell.style) \
            if "\n" in cell.plain else cell.copy()
        fill = " " * (width - cell_len(cell.plain))
        parts.append(Text(fill).append_text(cell) if column.right else cell.append(fill))
    line = Text(GAP).join(parts)
    line.rstrip()
    if bold:
        line.stylize("bold")
    return line


def _text(cell: Cell) -> Text:
    return cell if isinstance(cell, Text) else Text(cell)
