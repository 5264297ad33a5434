"""The comparison report: what a run measured, per distro, as Markdown and one HTML page.

It reads only what the run left in the artifacts folder (facts.json from the
facts suite, junit.xml, the shared machine's timings, status.json from the
matrix), so every value in it was measured by that run; a missing value names
why. The HTML page is self-contained (inline CSS and SVG, no script, font or
URL), so it can be mailed or uploaded as a CI artifact and still render.
"""

import html
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from xml.etree import ElementTree as ET

from harness import catalog
from harness.report.facts import Value, from_json

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
# Boot phases: (name, timings key it ends at); each starts where the previous ended.
PHASES = (
    ("firmware to kernel", "kernel"),
    ("to SSH", "ssh"),
    ("to first command", "command"),
    ("to boot finished", "ready"),
)
COLOURS = ("#4e79a7", "#f28e2b", "#59a14f", "#b07aa1")


@dataclass
class SuiteResult:
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    notes: list[str] = field(default_factory=list)  # failures and skip reasons, by test

    def summary(self) -> str:
        parts = [f"{n} {word}" for n, word in ((self.passed, "passed"), (self.failed, "failed"),
                                                (self.skipped, "skipped")) if n]
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

    def fact(self, key: str) -> Value:
        if self.status:
            return Value(None, self.status)
        if key in self.facts:
            return self.facts[key]
        return Value(None, self.facts_why or f"not measured: {key} missing from facts.json")


# -- reading ------------------------------------------------------------------------------

def load(artifacts: Path) -> list[DistroRun]:
    """Every distro of the run in `artifacts`: the matrix's list, else each distro folder."""
    plan = artifacts / "matrix.json"
    if plan.exists():
        names = [d["distro"] for d in json.loads(plan.read_text())["distros"]]
    else:
        names = sorted(p.name for p in artifacts.iterdir() if p.is_dir() and _has_results(p))
    return [load_distro(artifacts / name) for name in names]


def _has_results(folder: Path) -> bool:
    return any((folder / f).exists() for f in ("facts.json", "junit.xml", "status.json"))


def load_distro(folder: Path) -> DistroRun:
    run = DistroRun(folder.name, title=_title(folder.name))
    status = _read_json(folder / "status.json")
    if status:
        run.status = "" if status.get("ran", True) else f"not run: {status.get('reason', '?')}"
        run.placement = status.get("libvirt_uri", "")
    _load_facts(run, folder)
    _load_timings(run, folder)
    _load_junit(run, folder / "junit.xml")
    return run


def _title(name: str) -> str:
    try:
        return catalog.get(name).title
    except catalog.CatalogError:
        return ""


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _load_facts(run: DistroRun, folder: Path) -> None:
    data = _read_json(folder / "facts.json")
    if not data:
        run.facts_why = "not measured: no facts.json (the facts suite did not run or failed)"
        return
    run.facts = from_json(data.get("facts", {}))
    run.title = data.get("title") or run.title
    run.timings = data.get("timings") or {}


def _load_timings(run: DistroRun, folder: Path) -> None:
    """The shared machine's boot phases, when facts.json did not carry them."""
    if run.timings:
        return
    shared = _read_json(folder / f"{run.name}-shared" / "timings.json")
    if shared:
        run.timings = shared
    else:
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
        suite.notes.append(f"{name}: failed: {_first_line(problem)}")
    elif skipped is not None:
        suite.skipped += 1
        suite.notes.append(f"{name}: skipped: {_first_line(skipped)}")
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


# -- shared helpers -----------------------------------------------------------------------

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


class Notes:
    """Numbered reasons for unmeasured values, shown once below the tables."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def ref(self, why: str) -> int:
        if why not in self.items:
            self.items.append(why)
        return self.items.index(why) + 1


# -- Markdown -----------------------------------------------------------------------------

def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_value(v: Value, notes: Notes) -> str:
    return _md_cell(v.value) if v.value is not None else f"not measured [{notes.ref(v.why)}]"


def markdown(runs: list[DistroRun], generated: str) -> str:
    notes = Notes()
    lines = ["# Container OS comparison", "",
             f"Generated {generated} from the artifacts of one run; every value below was "
             "measured in that run.", "", "## Comparison", "",
             "| distro | " + " | ".join(h for _, h in COLUMNS) + " | boot finished |",
             "|---" * (len(COLUMNS) + 2) + "|"]
    for r in runs:
        if r.status:
            lines.append(_md_not_run(r, notes, len(COLUMNS) + 1))
            continue
        cells = [_md_value(r.fact(key), notes) for key, _ in COLUMNS]
        cells.append(_md_boot(r, notes))
        lines.append(f"| **{r.name}** | " + " | ".join(cells) + " |")
    lines += _md_suites(runs, notes) + _md_phases(runs, notes)
    lines += ["", "## Why a value is missing", ""]
    lines += [f"{i}. {_md_cell(why)}" for i, why in enumerate(notes.items, 1)] or ["(none)"]
    return "\n".join(lines) + "\n"


def _md_not_run(r: DistroRun, notes: Notes, cells: int) -> str:
    return f"| **{r.name}** | not run [{notes.ref(r.status)}] |" + " |" * (cells - 1)


def _md_boot(r: DistroRun, notes: Notes) -> str:
    if "ready" in r.timings:
        return f"{r.timings['ready']:.1f} s"
    return f"not measured [{notes.ref(r.timings_why or 'not measured: boot did not finish')}]"


def _md_suites(runs: list[DistroRun], notes: Notes) -> list[str]:
    names = suite_names(runs)
    lines = ["", "## Suites", "", "| distro | " + " | ".join(names) + " |",
             "|---" * (len(names) + 1) + "|"]
    for r in runs:
        if r.status:
            lines.append(_md_not_run(r, notes, len(names)))
            continue
        if not r.suites:
            lines.append(f"| {r.name} | " + " | ".join(
                [f"not run [{notes.ref(r.suites_why)}]"] * len(names)) + " |")
            continue
        cells = [r.suites[s].summary() if s in r.suites else "—" for s in names]
        lines.append(f"| {r.name} | " + " | ".join(cells) + " |")
    for r in runs:
        details = [f"- {s}: {_md_cell(n)}" for s in names if s in r.suites
                   for n in r.suites[s].notes]
        if details:
            lines += ["", f"### {r.name}: failures and skips", "", *details]
    return lines


def _md_phases(runs: list[DistroRun], notes: Notes) -> list[str]:
    lines = ["", "## Boot phases (seconds)", "",
             "| distro | " + " | ".join(n for n, _ in PHASES) + " | total |",
             "|---" * (len(PHASES) + 2) + "|"]
    for r in runs:
        got = dict(phases(r.timings))
        if r.status:
            lines.append(_md_not_run(r, notes, len(PHASES) + 1))
            continue
        if not got:
            why = r.timings_why or "not measured: no boot phase recorded"
            lines.append(f"| {r.name} | " + " | ".join(
                [f"not measured [{notes.ref(why)}]"] * (len(PHASES) + 1)) + " |")
            continue
        cells = [f"{got[n]:.1f}" if n in got else "not reached" for n, _ in PHASES]
        lines.append(f"| {r.name} | " + " | ".join(cells) + f" | {sum(got.values()):.1f} |")
    return lines


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
td.failed { color: #a00; font-weight: bold; }
tr.notrun td { background: #f4f4f4; color: #666; }
sup { font-size: 10px; }
ol.notes li, ul.details li { margin: 2px 0; }
"""


def _cell(v: Value, notes: Notes) -> str:
    if v.value is not None:
        # A one-word value (a version, a size) reads badly when wrapped at its hyphens.
        nowrap = "" if " " in v.value else ' class="nw"'
        return f"<td{nowrap}>{html.escape(v.value)}</td>"
    n = notes.ref(v.why)
    return (f'<td class="missing" title="{html.escape(v.why)}">not measured '
            f'<sup><a href="#note-{n}">{n}</a></sup></td>')


def page(runs: list[DistroRun], generated: str) -> str:
    notes = Notes()
    body = [f"<h1>Container OS comparison</h1><p class=\"meta\">Generated "
            f"{html.escape(generated)} from the artifacts of one run; every value was measured "
            "in that run.</p>", "<h2>Comparison</h2>", _html_comparison(runs, notes),
            "<h2>Suites</h2>", _html_suites(runs, notes),
            "<h2>Boot phases</h2>", svg_chart(runs), _html_notes(notes)]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<title>Container OS comparison</title>"
            f"<style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def _html_comparison(runs: list[DistroRun], notes: Notes) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for _, h in COLUMNS)
    rows = []
    for r in runs:
        name = f"<td><b>{html.escape(r.name)}</b>"
        if r.status:
            rows.append(_not_run_row(r, len(COLUMNS) + 1))
            continue
        boot = (Value(f"{r.timings['ready']:.1f} s") if "ready" in r.timings
                else Value(None, r.timings_why or "not measured: boot did not finish"))
        cells = "".join(_cell(r.fact(key), notes) for key, _ in COLUMNS) + _cell(boot, notes)
        rows.append(f"<tr>{name}</td>{cells}</tr>")
    return (f'<div class="scroll"><table id="comparison"><tr><th>distro</th>{head}'
            f"<th>boot finished</th></tr>{''.join(rows)}</table></div>")


def _html_suites(runs: list[DistroRun], notes: Notes) -> str:
    names = suite_names(runs)
    rows = []
    for r in runs:
        if r.status:
            rows.append(_not_run_row(r, len(names)))
            continue
        if not r.suites:
            why = Value(None, r.suites_why)
            rows.append(f"<tr><td><b>{html.escape(r.name)}</b></td>"
                        + _cell(why, notes) * len(names) + "</tr>")
            continue
        cells = "".join(_suite_cell(r.suites.get(s)) for s in names)
        rows.append(f"<tr><td><b>{html.escape(r.name)}</b></td>{cells}</tr>")
    head = "".join(f"<th>{html.escape(s)}</th>" for s in names)
    table = (f'<div class="scroll"><table id="suites"><tr><th>distro</th>{head}</tr>'
             f"{''.join(rows)}</table></div>")
    return table + _html_details(runs, names)


def _not_run_row(r: DistroRun, span: int) -> str:
    """One cell for the whole row: repeating "not run" in each column says nothing more."""
    return (f'<tr class="notrun"><td><b>{html.escape(r.name)}</b></td>'
            f'<td colspan="{span}">{html.escape(r.status)}</td></tr>')


def _suite_cell(s: SuiteResult | None) -> str:
    if s is None:
        return "<td>—</td>"
    cls = ' class="failed"' if s.failed else ""
    return f"<td{cls}>{html.escape(s.summary())}</td>"


def _html_details(runs: list[DistroRun], names: list[str]) -> str:
    out = []
    for r in runs:
        items = [f"<li>{html.escape(s)}: {html.escape(n)}</li>" for s in names
                 if s in r.suites for n in r.suites[s].notes]
        if items:
            out.append(f"<p><b>{html.escape(r.name)}</b>: failures and skips</p>"
                       f"<ul class=\"details\">{''.join(items)}</ul>")
    return "".join(out)


def _html_notes(notes: Notes) -> str:
    if not notes.items:
        return ""
    items = "".join(f'<li id="note-{i}">{html.escape(why)}</li>'
                    for i, why in enumerate(notes.items, 1))
    return f'<h2>Why a value is missing</h2><ol class="notes">{items}</ol>'


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
    md.write_text(markdown(runs, generated))
    page_path.write_text(page(runs, generated))
    return md, page_path
