"""The comparison report: what a run measured, per distro, as Markdown and one HTML page.

It reads only what the run left in the artifacts folder (facts.json from the
facts suite, junit.xml, the boot phases of the machine that cold-booted,
status.json from the matrix), so every value in it was measured by that run; a
missing value names why, and one unreadable file spoils only its own cells.
The tables are built once, as a model (`build`); Markdown and HTML only render
it. The HTML page is self-contained (inline CSS and SVG, no script, font or
URL), so it can be mailed or uploaded as a CI artifact and still render.
"""

import html
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from xml.etree import ElementTree as ET

from harness import catalog
from harness.paths import replace_file
from harness.report.facts import Value, from_json
from harness.vm import readiness

# (key in facts.json, column heading)
COLUMNS = (
    ("image_size", "image size"),
    ("kernel", "kernel"),
    ("docker", "Docker"),
    ("init", "init (PID 1)"),
    ("package_manager", "package manager"),
    ("mount /", "root filesystem"),
    ("mount /usr", "/usr"),
    ("bundled_tools", "bundled tools"),
    ("first_boot", "first boot configured by"),
)
# Boot phases, from the machine's readiness table: (label, timings key it ends at);
# each starts where the previous ended.
PHASES = tuple((p.label, p.name) for p in readiness.PHASES)
COLOURS = ("#4e79a7", "#f28e2b", "#59a14f", "#b07aa1")
REPRODUCES = "reproduces "  # junit's xfail message for a known bug (harness.plugin.bugs)


@dataclass
class SuiteResult:
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    reproduced: int = 0  # failures that are a known bug this distro exists to show
    # (test name, what happened, tracker link of a reproduced bug)
    notes: list[tuple[str, str, str]] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"{n} {word}" for n, word in (
            (self.passed, "passed"), (self.failed, "failed"),
            (self.reproduced, "reproduce a known bug"), (self.skipped, "skipped")) if n]
        return ", ".join(parts) or "no tests"


@dataclass
class DistroRun:
    name: str
    title: str = ""
    status: str = ""  # "" when it ran; "not run: why" otherwise
    facts: dict[str, Value] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    timings_why: str = ""
    suites: dict[str, SuiteResult] = field(default_factory=dict)
    suites_why: str = ""
    placement: str = ""
    facts_why: str = ""
    seed: str = ""  # the first-boot format, from the catalog

    def fact(self, key: str) -> Value:
        if self.status:
            return Value(None, self.status)
        if key in self.facts:
            return self.facts[key]
        return Value(None, self.facts_why or f"not measured: {key} missing from facts.json")


# -- reading ------------------------------------------------------------------------------

def load(artifacts: Path) -> list[DistroRun]:
    """Every distro of the run in `artifacts`: the matrix's list, else each distro folder."""
    if not artifacts.is_dir():
        raise FileNotFoundError(f"{artifacts}: no such folder (a run's --artifacts folder)")
    plan = _read_json(artifacts / "matrix.json").get("distros")
    names = [d["distro"] for d in plan if isinstance(d, dict) and isinstance(d.get("distro"), str)
             and "/" not in d["distro"]] if isinstance(plan, list) else []
    if not names:
        names = sorted(p.name for p in artifacts.iterdir() if p.is_dir() and _has_results(p))
    return [load_distro(artifacts / name) for name in names]


def _has_results(folder: Path) -> bool:
    return any((folder / f).exists() for f in ("facts.json", "junit.xml", "status.json"))


def load_distro(folder: Path) -> DistroRun:
    run = DistroRun(folder.name)
    try:
        entry = catalog.get(folder.name)
        run.title, run.seed = entry.title, entry.boot.seed
    except catalog.CatalogError:
        pass
    status = _read_json(folder / "status.json")
    if status:
        run.status = "" if status.get("ran", True) else f"not run: {status.get('reason', '?')}"
        run.placement = str(status.get("libvirt_uri", ""))
    _load_facts(run, folder)
    _load_timings(run, folder)
    _load_junit(run, folder / "junit.xml")
    return run


def _read_json(path: Path) -> dict:
    """A JSON object from `path`, or {} when it is missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _load_facts(run: DistroRun, folder: Path) -> None:
    data = _read_json(folder / "facts.json")
    try:
        run.facts = from_json(data.get("facts") or {})
    except (AttributeError, TypeError):
        data = {}
    if not data:
        run.facts_why = "not measured: no readable facts.json (the facts suite did not run, " \
                        "failed, or left a malformed file)"
        return
    run.title = str(data.get("title") or run.title)
    run.timings = _timings(data.get("timings"))


def _timings(data: object) -> dict[str, float]:
    if not isinstance(data, dict):
        return {}
    return {k: float(v) for k, v in data.items() if isinstance(v, int | float)}


def _load_timings(run: DistroRun, folder: Path) -> None:
    """The phases of the cold boot behind the shared machine (its boot.json), when
    facts.json did not carry them."""
    if run.timings:
        return
    boot = _read_json(folder / f"{run.name}-shared" / "boot.json")
    run.timings = _timings(boot.get("timings"))
    if not run.timings:
        run.timings_why = run.status or "not measured: no machine of this distro finished booting"


def _load_junit(run: DistroRun, path: Path) -> None:
    if not path.exists():
        run.suites_why = run.status or "not measured: no junit.xml"
        return
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        run.suites_why = f"not measured: junit.xml unreadable: {e}"
        return
    for case in root.iter("testcase"):
        suite = run.suites.setdefault(_suite_name(case.get("classname", "")), SuiteResult())
        _count(suite, case)


def _suite_name(classname: str) -> str:
    """`tests.suites.test_docker` (or `...test_docker.TestX`) -> `docker`."""
    parts = classname.split(".")
    module = next((p for p in reversed(parts) if p.startswith("test_")), parts[-1])
    return module.removeprefix("test_")


def _count(suite: SuiteResult, case: ET.Element) -> None:
    name = case.get("name", "?")
    problem = case.find("failure")
    if problem is None:
        problem = case.find("error")
    skipped = case.find("skipped")
    if problem is not None:
        suite.failed += 1
        suite.notes.append((name, f"failed: {_first_line(problem)}", ""))
    elif skipped is not None and skipped.get("message", "").startswith(REPRODUCES):
        suite.reproduced += 1
        url = skipped.get("message", "").removeprefix(REPRODUCES)
        suite.notes.append((name, "reproduces", url))
    elif skipped is not None:
        suite.skipped += 1
        suite.notes.append((name, f"skipped: {_first_line(skipped)}", ""))
    else:
        suite.passed += 1


def _first_line(element: ET.Element) -> str:
    """The message's first line, and for a failed guest command its stderr's first
    line too: that is where the guest says why."""
    text = element.get("message") or element.text or ""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return "no message"
    summary = lines[0].removeprefix("Skipped: ")
    if "--- stderr ---" in lines[1:]:
        said = lines[lines.index("--- stderr ---") + 1:]
        if said:
            summary += f" (stderr: {said[0][:300]})"
    return summary


def phases(timings: dict[str, float]) -> list[tuple[str, float]]:
    """Durations of each boot phase from cumulative marks; phases not reached are left out."""
    out, start = [], 0.0
    for name, key in PHASES:
        if key not in timings:
            break
        out.append((name, max(0.0, timings[key] - start)))
        start = timings[key]
    return out


def suite_names(runs: list[DistroRun]) -> list[str]:
    return sorted({s for r in runs for s in r.suites})


# -- the model: every table built once ---------------------------------------------------

class Notes:
    """Numbered reasons for unmeasured values, shown once below the tables."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def ref(self, why: str) -> int:
        if why not in self.items:
            self.items.append(why)
        return self.items.index(why) + 1


@dataclass(frozen=True)
class Cell:
    text: str
    note: int = 0  # a "why is this missing" note number, when the value is missing
    state: str = ""  # "", "missing", "failed" or "reproduces"
    link: str = ""


@dataclass
class Row:
    name: str
    cells: list[Cell] = field(default_factory=list)
    not_run: str = ""  # the whole row is this reason


@dataclass
class Table:
    id: str
    title: str
    headers: list[str]
    rows: list[Row]


@dataclass
class Report:
    generated: str
    tables: list[Table]
    details: list[tuple[str, list[Cell]]]  # per distro: its failures, reproductions, skips
    notes: Notes
    runs: list[DistroRun]


def _value_cell(v: Value, notes: Notes) -> Cell:
    if v.value is not None:
        return Cell(v.value)
    return Cell("not measured", notes.ref(v.why), "missing")


def _boot_value(r: DistroRun) -> Value:
    if "ready" in r.timings:
        return Value(f"{r.timings['ready']:.1f} s")
    return Value(None, r.timings_why or "not measured: boot did not finish")


def build(runs: list[DistroRun], generated: str) -> Report:
    """The report's tables, rows and notes; the renderers below only format them."""
    notes = Notes()
    tables = [_comparison(runs, notes), _suites(runs, notes), _phase_table(runs, notes)]
    details = []
    for r in runs:
        cells = [Cell(f"{suite}: {name}: {what}", state=_state(what), link=url)
                 for suite in sorted(r.suites) for name, what, url in r.suites[suite].notes]
        if cells:
            details.append((r.name, cells))
    return Report(generated, tables, details, notes, runs)


def _state(what: str) -> str:
    return "reproduces" if what == "reproduces" else "failed" if what.startswith("failed") \
        else ""


def _not_run(r: DistroRun, notes: Notes) -> Row:
    notes.ref(r.status)
    return Row(r.name, not_run=r.status)


def _comparison(runs: list[DistroRun], notes: Notes) -> Table:
    rows = []
    for r in runs:
        if r.status:
            rows.append(_not_run(r, notes))
            continue
        cells = [_value_cell(r.fact(key), notes) for key, _ in COLUMNS]
        cells.append(Cell(r.seed or "?"))
        cells.append(_value_cell(_boot_value(r), notes))
        rows.append(Row(r.name, cells))
    headers = [h for _, h in COLUMNS] + ["first-boot format", "boot finished"]
    return Table("comparison", "Comparison", headers, rows)


def _suites(runs: list[DistroRun], notes: Notes) -> Table:
    names = suite_names(runs)
    rows = []
    for r in runs:
        if r.status:
            rows.append(_not_run(r, notes))
        elif not r.suites:
            rows.append(Row(r.name, [Cell("not run", notes.ref(r.suites_why), "missing")]
                            * len(names)))
        else:
            rows.append(Row(r.name, [_suite_cell(r.suites.get(s)) for s in names]))
    return Table("suites", "Suites", names, rows)


def _suite_cell(s: SuiteResult | None) -> Cell:
    if s is None:
        return Cell("—")
    return Cell(s.summary(), state="failed" if s.failed else "reproduces" if s.reproduced
                else "")


def _phase_table(runs: list[DistroRun], notes: Notes) -> Table:
    rows = []
    for r in runs:
        got = dict(phases(r.timings))
        if r.status:
            rows.append(_not_run(r, notes))
        elif not got:
            why = r.timings_why or "not measured: no boot phase recorded"
            rows.append(Row(r.name, [Cell("not measured", notes.ref(why), "missing")]
                            * (len(PHASES) + 1)))
        else:
            cells = [Cell(f"{got[n]:.1f}" if n in got else "not reached") for n, _ in PHASES]
            rows.append(Row(r.name, [*cells, Cell(f"{sum(got.values()):.1f}")]))
    return Table("phases", "Boot phases (seconds)", [n for n, _ in PHASES] + ["total"], rows)


# -- Markdown -----------------------------------------------------------------------------

def _md(text: str) -> str:
    """Text safe in a Markdown table cell: no HTML, no cell or line breaks."""
    text = html.escape(text, quote=False)
    return text.replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _md_cell(cell: Cell) -> str:
    text = _md(cell.text)
    if cell.state == "reproduces" and cell.link:
        text += f" [{_md(cell.link)}]({_md(cell.link)})"
    return f"{text} [{cell.note}]" if cell.note else text


def markdown(runs: list[DistroRun], generated: str) -> str:
    return render_markdown(build(runs, generated))


def render_markdown(report: Report) -> str:
    lines = ["# Container OS comparison", "",
             f"Generated {_md(report.generated)} from the artifacts of one run; every value "
             "below was measured in that run."]
    for table in report.tables:
        lines += ["", f"## {_md(table.title)}", "",
                  "| distro | " + " | ".join(_md(h) for h in table.headers) + " |",
                  "|---" * (len(table.headers) + 1) + "|"]
        for row in table.rows:
            name = f"**{_md(row.name)}**"
            if row.not_run:
                cells = [f"not run [{report.notes.ref(row.not_run)}]"] + \
                    [""] * (len(table.headers) - 1)
            else:
                cells = [_md_cell(c) for c in row.cells]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for name, cells in report.details:
        lines += ["", f"### {_md(name)}: failures, reproductions and skips", ""]
        lines += [f"- {_md_cell(c)}" for c in cells]
    lines += ["", "## Why a value is missing", ""]
    lines += [f"{i}. {_md(why)}" for i, why in enumerate(report.notes.items, 1)] or ["(none)"]
    return "\n".join(lines) + "\n"


# -- HTML ---------------------------------------------------------------------------------

CSS = """
body { font: 14px/1.4 sans-serif; margin: 24px; color: #222; background: #fff; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 28px 0 8px; }
p.meta { color: #555; margin: 0 0 8px; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #eef1f5; white-space: nowrap; }
td.nw { white-space: nowrap; }
td.missing { color: #8a5a00; background: #fff8e6; }
td.failed, li.failed { color: #a00; font-weight: bold; }
td.reproduces, li.reproduces { color: #5b3a99; background: #f1ecfa; }
tr.notrun td { background: #f4f4f4; color: #666; }
sup { font-size: 10px; }
ol.notes li, ul.details li { margin: 2px 0; }
"""


def _html_body(cell: Cell) -> str:
    """A cell's content: escaped text, its link and its note reference."""
    text = html.escape(cell.text)
    if cell.link:
        text += f' <a href="{html.escape(cell.link)}">{html.escape(cell.link)}</a>'
    if cell.note:
        text += f' <sup><a href="#note-{cell.note}">{cell.note}</a></sup>'
    return text


def _html_cell(cell: Cell) -> str:
    classes = [cell.state] if cell.state else []
    if " " not in cell.text:  # a version or a size reads badly when wrapped at hyphens
        classes.append("nw")
    attr = f' class="{" ".join(classes)}"' if classes else ""
    return f"<td{attr}>{_html_body(cell)}</td>"


def _html_table(table: Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.headers)
    rows = []
    for row in table.rows:
        name = f"<td><b>{html.escape(row.name)}</b></td>"
        if row.not_run:  # one cell: repeating "not run" in each column says nothing more
            rows.append(f'<tr class="notrun">{name}<td colspan="{len(table.headers)}">'
                        f"{html.escape(row.not_run)}</td></tr>")
        else:
            rows.append(f"<tr>{name}{''.join(_html_cell(c) for c in row.cells)}</tr>")
    return (f'<h2>{html.escape(table.title)}</h2><div class="scroll"><table id="{table.id}">'
            f"<tr><th>distro</th>{head}</tr>{''.join(rows)}</table></div>")


def page(runs: list[DistroRun], generated: str) -> str:
    return render_page(build(runs, generated))


def render_page(report: Report) -> str:
    body = [f'<h1>Container OS comparison</h1><p class="meta">Generated '
            f"{html.escape(report.generated)} from the artifacts of one run; every value was "
            "measured in that run.</p>"]
    body += [_html_table(t) for t in report.tables]
    for name, cells in report.details:
        items = "".join(f'<li class="{c.state}">{_html_body(c)}</li>' if c.state else
                        f"<li>{_html_body(c)}</li>" for c in cells)
        body.append(f"<p><b>{html.escape(name)}</b>: failures, reproductions and skips</p>"
                    f'<ul class="details">{items}</ul>')
    body.append(svg_chart(report.runs))
    if report.notes.items:
        items = "".join(f'<li id="note-{i}">{html.escape(why)}</li>'
                        for i, why in enumerate(report.notes.items, 1))
        body.append(f'<h2>Why a value is missing</h2><ol class="notes">{items}</ol>')
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<title>Container OS comparison</title>"
            f"<style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


# -- the chart ----------------------------------------------------------------------------

def svg_chart(runs: list[DistroRun], width: int = 900) -> str:
    """Horizontal stacked bars, one per distro, one colour per boot phase."""
    label_w, bar_h, gap, top = 150, 22, 10, 34
    plot_w = width - label_w - 70
    longest = max((t for r in runs for t in [sum(d for _, d in phases(r.timings))]),
                  default=0.0) or 1.0
    step = _tick_step(longest)
    scale = plot_w / (step * -(-longest // step))
    height = top + len(runs) * (bar_h + gap) + 30
    parts = [f'<svg id="boot-chart" xmlns="http://www.w3.org/2000/svg" width="{width}" '
             f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
             'aria-label="boot phases per distro" font-family="sans-serif" font-size="12">']
    parts += _legend(label_w)
    parts += _axis(label_w, top, height - 26, scale, step, longest)
    for i, r in enumerate(runs):
        parts += _bar(r, label_w, top + i * (bar_h + gap), bar_h, scale)
    parts.append("</svg>")
    return "\n".join(parts)


def _tick_step(longest: float) -> float:
    for step in (1, 2, 5, 10, 20, 30, 60, 120, 300, 600):
        if longest / step <= 10:
            return step
    return 1200


def _legend(x: int) -> list[str]:
    out = []
    for i, (name, _) in enumerate(PHASES):
        lx = x + i * 170
        out.append(f'<rect x="{lx}" y="6" width="12" height="12" fill="{COLOURS[i]}"/>'
                   f'<text x="{lx + 16}" y="16">{html.escape(name)}</text>')
    return out


def _axis(x: int, top: int, bottom: int, scale: float, step: float, longest: float) -> list[str]:
    out = []
    ticks = int(-(-longest // step))
    for k in range(ticks + 1):
        tx = x + k * step * scale
        out.append(f'<line x1="{tx:.1f}" y1="{top - 4}" x2="{tx:.1f}" y2="{bottom}" '
                   'stroke="#ddd"/>'
                   f'<text x="{tx:.1f}" y="{bottom + 14}" text-anchor="middle" fill="#555">'
                   f"{k * step:g} s</text>")
    return out


def _bar(r: DistroRun, x: int, y: int, h: int, scale: float) -> list[str]:
    out = [f'<text x="{x - 8}" y="{y + h / 2 + 4:.1f}" text-anchor="end">'
           f"{html.escape(r.name)}</text>"]
    got = phases(r.timings)
    if not got:
        why = r.timings_why or "not measured"
        return [*out, f'<text x="{x + 4}" y="{y + h / 2 + 4:.1f}" fill="#8a5a00">'
                      f"{html.escape(why)}</text>"]
    start = 0.0
    for i, (name, seconds) in enumerate(got):
        out.append(f'<rect x="{x + start * scale:.1f}" y="{y}" width="{seconds * scale:.1f}" '
                   f'height="{h}" fill="{COLOURS[i]}"><title>{html.escape(r.name)}: '
                   f"{html.escape(name)} {seconds:.1f} s</title></rect>")
        start += seconds
    out.append(f'<text x="{x + start * scale + 6:.1f}" y="{y + h / 2 + 4:.1f}">'
               f"{start:.1f} s</text>")
    return out


# -- writing ------------------------------------------------------------------------------

def write(artifacts: Path, out_dir: Path | None = None) -> tuple[Path, Path]:
    """Write report.md and report.html for the run in `artifacts`; returns their paths."""
    out_dir = out_dir or artifacts
    runs = load(artifacts)
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    md, page_path = out_dir / "report.md", out_dir / "report.html"
    replace_file(md, markdown(runs, generated))  # never through a planted symlink
    replace_file(page_path, page(runs, generated))
    return md, page_path
