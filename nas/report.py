"""``nas report RUN --out report.html``: one self-contained HTML page about a search.

Everything is inline (CSS, plots as base64 PNG ``<img>``), nothing is fetched from the
network, so the file can be mailed, archived or opened offline. Sections: what ran, the
baseline against the best found, the Pareto front, progress, the top-k with their arch
strings, what the search learned per stage, the rediscovery score, the proxy's fidelity
(when ``nas fidelity`` has checked it), failures. The footer
says how to open the same study in optuna-dashboard::

    optuna-dashboard sqlite:///runs/NAME/study.db
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import pandas as pd

from nas import analysis

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["render_report", "write_report", "dashboard_command"]

_CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0;background:#f5f7fa;color:#1f2933}
main{max-width:1180px;margin:0 auto;padding:24px 32px 48px}
header{background:#1f3a5f;color:#fff;padding:22px 32px}
header h1{margin:0;font-size:26px}header p{margin:6px 0 0;color:#cbd5e1}
section{background:#fff;border:1px solid #d9e2ec;border-radius:8px;margin:18px 0;padding:14px 20px}
h2{font-size:18px;margin:4px 0 12px;color:#1f3a5f}
table{border-collapse:collapse;font-size:13px;margin:6px 0}
th,td{border-bottom:1px solid #e4e7eb;padding:4px 10px;text-align:left;vertical-align:top}
th{background:#f0f4f8}td.num{text-align:right;font-variant-numeric:tabular-nums}
code,.arch{font-family:Menlo,Consolas,monospace;font-size:12px}
.arch{word-break:break-all;max-width:560px}
.kv th{width:190px}.big{font-size:30px;font-weight:600;color:#1f3a5f}
.tag{display:inline-block;background:#e3f2fd;color:#0b5394;border-radius:4px;padding:0 6px;font-size:11px}
.base{background:#fff5f5}.good{color:#1b7f3b}.bad{color:#b42318}
.warn{background:#fff8e1;border-left:4px solid #f0b429;padding:6px 10px}
img{max-width:100%;height:auto;border:1px solid #e4e7eb;border-radius:4px;margin:6px 0}
footer{color:#52606d;font-size:12px;margin-top:24px}
"""


def dashboard_command(run: str | Path) -> str:
    """The shell command that opens the run's study in optuna-dashboard."""
    from nas.study import RunDir

    return f"optuna-dashboard {RunDir(run).storage_url()}"


def write_report(run: str | Path, out: str | Path, *, top_k: int = 10) -> Path:
    """Render the report of ``run`` and write it to ``out`` (an ``.html`` file)."""
    text = render_report(run, top_k=top_k)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    return out


def render_report(run: str | Path, *, top_k: int = 10) -> str:
    """The report of ``run`` as one HTML string (self-contained: no external resources)."""
    frame = analysis.trials_frame(run)  # FileNotFoundError for a missing run, before any plotting
    summary = analysis.run_summary(frame)
    done = analysis.complete_trials(frame)
    parts = [
        _summary_section(summary, frame),
        _baseline_section(frame, summary),
        _front_section(frame, done),
        _progress_section(frame),
        _top_section(frame, top_k),
        _learned_section(frame, done, top_k),
        _rediscovery_section(frame, top_k),
        _fidelity_section(run),
        _failures_section(summary),
    ]
    title = f"nas report: {summary['name']}"
    subtitle = summary["description"] or ""
    now = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    from nas import __version__

    footer = (f"Generated {now} by nas {__version__} from <code>{_e(str(Path(run).resolve()))}</code>. "
              f"Open the same study in optuna-dashboard: <code>{_e(dashboard_command(run))}</code> "
              f"(then browse http://127.0.0.1:8080). In Python: "
              f"<code>nas.analysis.trials_frame({_e(repr(str(run)))})</code>.")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
            f"<header><h1>{_e(title)}</h1><p>{_e(subtitle)}</p></header><main>"
            + "".join(p for p in parts if p)
            + f"<footer>{footer}</footer></main></body></html>\n")


# -- helpers ------------------------------------------------------------------------------------------
def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any, kind: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return "–"
    if kind == "ms":
        return f"{float(value) * 1e3:.2f}"
    if kind == "pct":
        return f"{float(value):.1%}"
    if kind == "int":
        return f"{int(value):,}"
    if kind == "M":
        return f"{float(value) / 1e6:.2f}"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _img(fig: "Figure", alt: str) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=96)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _plot(make: Any, alt: str) -> str:
    """A figure inline, or one line saying why it is missing (e.g. matplotlib not installed)."""
    try:
        return _img(make(), alt)
    except ImportError as err:
        return f"<p><em>{_e(err)}</em></p>"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, numeric: Sequence[bool] | None = None,
           row_class: Sequence[str] | None = None) -> str:
    numeric = numeric or [False] * len(headers)
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{row_class[i]}"' if row_class and row_class[i] else ""
        cells = "".join(f'<td class="num">{c}</td>' if n else f"<td>{c}</td>" for c, n in zip(row, numeric))
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _section(title: str, body: str, anchor: str) -> str:
    return f'<section id="{anchor}"><h2>{_e(title)}</h2>{body}</section>'


FEW_TRIALS = 30  # below this many evaluated trials, per-choice statistics are called anecdotes
_TRIAL_HEADERS = ["trial", "arch", "accuracy", "S (ms)", "params", "MMACs", "reward"]
_TRIAL_NUMERIC = [True, False, True, True, True, True, True]


def _trial_rows(rows: pd.DataFrame) -> tuple[list[list[str]], list[str]]:
    out, classes = [], []
    for _, r in rows.iterrows():
        tag = ' <span class="tag">baseline</span>' if bool(r.get("baseline")) else ""
        out.append([f"{_e(r['number'])}{tag}", f'<span class="arch">{_e(r["arch"])}</span>',
                    _fmt(r["accuracy"]), _fmt(r["step_time"], "ms"), _fmt(r["params"], "int"),
                    _fmt(r["macs"], "M"), _fmt(r["reward"])])
        classes.append("base" if bool(r.get("baseline")) else "")
    return out, classes


def _duration(seconds: float | None) -> str:
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "–"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


# -- sections -------------------------------------------------------------------------------------------
def _summary_section(s: dict[str, Any], frame: pd.DataFrame) -> str:
    proxy = s["proxy"] or {}
    proxy_text = ", ".join(f"{k} {v}" for k, v in proxy.items()) or "defaults"
    reward = s["reward"]
    if isinstance(reward, dict):
        reward = ", ".join(f"{k} {v}" for k, v in reward.items())
    controller = s["controller"] or "–"
    if s["controller_options"]:
        controller += " (" + ", ".join(f"{k} {v}" for k, v in s["controller_options"].items()) + ")"
    states = ", ".join(f"{v} {k}" for k, v in sorted(s["states"].items())) or "none"
    budget = f" of a budget of {s['budget']}" if s.get("budget") else ""
    rows = [
        ("run directory", f"<code>{_e(s['run'] or '–')}</code>"),
        ("search space", _e(s["space"] or "–")),
        ("data set", _e(s["dataset"] or "–")),
        ("proxy task", _e(proxy_text)),
        ("reward", _e(reward or "–")),
        ("controller", _e(controller)),
        ("seed", _e(s["seed"] if s["seed"] is not None else "–")),
        ("device", "<br>".join(_e(d) for d in s["devices"]) or "–"),
        ("backend", _e(f"{s.get('backend') or 'local'}, {s.get('workers') or 1} worker(s)")),
        ("trials", _e(f"{s['trials']}{budget}: {states}; {s['duplicates']} duplicate(s) reused")),
        ("wall time", _e(f"{_duration(s['wall_seconds'])} (candidate time {_duration(s['train_seconds'])})")),
        ("failures", _e(f"{len([f for f in s['failures'] if f['state'] == 'FAIL'])} failed, "
                        f"{len([f for f in s['failures'] if f['state'] == 'PRUNED'])} pruned")),
    ]
    body = "<table class=\"kv\">" + "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in rows) + "</table>"
    return _section("Run summary", body, "summary")


def _baseline_section(frame: pd.DataFrame, s: dict[str, Any]) -> str:
    base, best = s["baseline"], s["best"]
    if base is None and best is None:
        return _section("Baseline vs best found", "<p>No COMPLETE trial yet.</p>", "baseline")
    rows, classes = [], []
    for label, r in (("baseline", base), ("best found", best)):
        if r is None:
            continue
        rows.append([_e(label), _e(r["number"]), f'<span class="arch">{_e(r["arch"])}</span>', _fmt(r["accuracy"]),
                     _fmt(r["step_time"], "ms"), _fmt(r["params"], "int"), _fmt(r["macs"], "M"), _fmt(r["reward"])])
        classes.append("base" if label == "baseline" else "")
    body = _table(["", "trial", "arch", "accuracy", "S (ms)", "params", "MMACs", "reward"], rows,
                  numeric=[False, True, False, True, True, True, True, True], row_class=classes)
    if base is not None and best is not None and base["number"] != best["number"]:
        def ratio(key: str, better_low: bool) -> str:
            if not base.get(key) or best.get(key) is None:
                return "–"
            r = float(best[key]) / float(base[key])
            good = r < 1 if better_low else r > 1
            return f'<span class="{"good" if good else "bad"}">{r:.3f}x</span>'
        body += (f"<p>Best vs baseline: accuracy {ratio('accuracy', False)}, step time {ratio('step_time', True)}, "
                 f"parameters {ratio('params', True)}, reward {ratio('reward', False)}.</p>")
    elif base is not None and best is not None:
        body += "<p>The baseline itself has the best reward.</p>"
    if base is not None:
        beating = analysis.dominating_baseline(frame)
        if len(beating):
            trials = ", ".join(str(n) for n in beating["number"])
            body += (f"<p><b>{len(beating)}</b> trial(s) dominate the baseline (at least as accurate, as fast and as "
                     f"small, better in one): {trials}.</p>")
        else:
            body += "<p>No trial dominates the baseline in accuracy, step time and parameters together.</p>"
    else:
        body += "<p>The run has no COMPLETE baseline trial.</p>"
    return _section("Baseline vs best found", body, "baseline")


def _front_section(frame: pd.DataFrame, done: pd.DataFrame) -> str:
    if done.empty:
        return _section("Pareto front", "<p>No COMPLETE trial yet.</p>", "front")
    from nas import plots

    front = analysis.pareto_ranks_table(frame)
    on_front = front[front["rank"] == 0]
    rows, classes = _trial_rows(on_front)
    body = ("<p>Objectives: accuracy &uarr;, step time S &darr;, parameters P &darr;, over the distinct COMPLETE "
            f"trials. {len(on_front)} of {len(front)} are on the front; later fronts: "
            + ", ".join(f"rank {r}: {n}" for r, n in front["rank"].value_counts().sort_index().items() if r > 0)
            + ".</p>")
    body += _plot(lambda: plots.front_figure(frame), "Pareto front")
    body += _table(_TRIAL_HEADERS, rows, numeric=_TRIAL_NUMERIC, row_class=classes)
    hv2 = analysis.front_hypervolume(frame, ("accuracy", "step_time"))
    ref2 = analysis.default_reference(frame, ("accuracy", "step_time"))
    hv3 = analysis.front_hypervolume(frame, ("accuracy", "step_time", "params"))
    ref3 = analysis.default_reference(frame, ("accuracy", "step_time", "params"))
    body += (f"<p>Hypervolume (accuracy, S): <b>{hv2:.5g}</b> (reference accuracy 0, S {ref2[1] * 1e3:.2f} ms); "
             f"(accuracy, S, P): <b>{hv3:.5g}</b> (reference P {ref3[2]:,.0f}). The hypervolume is the volume of "
             "objective space the front dominates, up to the reference point (accuracy 0, S and P 10 % beyond "
             "the worst trial), in the objectives' units (accuracy &times; seconds, &times; parameters): larger "
             "is better, and it grows whenever the front improves anywhere. Compare it only between runs with "
             "the same reference point (<code>nas compare</code> takes one for all the runs it compares).</p>")
    return _section("Pareto front", body, "front")


def _progress_section(frame: pd.DataFrame) -> str:
    if not frame["reward"].notna().any():
        return ""
    from nas import plots

    return _section("Search progress", _plot(lambda: plots.progress_figure([frame]), "best reward per trial"),
                    "progress")


def _top_section(frame: pd.DataFrame, k: int) -> str:
    if not frame["reward"].notna().any():
        return ""
    top = analysis.top_trials(frame, k)
    rows, classes = _trial_rows(top)
    rows = [[_e(i + 1), *row] for i, row in enumerate(rows)]
    body = _table(["#", *_TRIAL_HEADERS], rows, numeric=[True, *_TRIAL_NUMERIC], row_class=classes)
    return _section(f"Top {len(top)} by reward", body, "top")


def _learned_section(frame: pd.DataFrame, done: pd.DataFrame, k: int) -> str:
    if done.empty or not done["reward"].notna().any():
        return ""
    from nas import plots

    choices = analysis.stage_choices(frame, k)
    n = min(k, len(done))
    rows = [[_e(int(r["stage"])), *[f"{_e(r[f])} <small>({r[f + '_share']:.0%})</small>"
                                    for f in analysis.REDISCOVERY_FIELDS]] for _, r in choices.iterrows()]
    body = ""
    if len(done) < FEW_TRIALS:
        body += (f'<p class="warn">Only {len(done)} evaluated trials: the shares and curves below describe these '
                 f"few networks, not the space. Trends of a design choice need dozens of trials per choice "
                 f"(pycls's EDFs use hundreds); read them as anecdotes.</p>")
    body += (f"<p>The most common choice per stage among the top {n} trials by reward (share in brackets).</p>"
             + _table(["stage", "block", "kernel", "expansion", "layers (depth)"], rows))
    if any(c.startswith("param.") for c in frame.columns):
        body += _plot(lambda: plots.choices_figure(frame, k), "choices of the top trials per stage")
        body += ("<p>Error EDFs per design choice (pycls): a curve further left/up means the choice gave "
                 "lower errors across the models that used it.</p>")
        body += _plot(lambda: plots.edf_figure(frame), "error EDFs per decision")
    return _section("What the search learned per stage", body, "learned")


def _rediscovery_section(frame: pd.DataFrame, k: int) -> str:
    try:
        found = analysis.rediscovery(frame, k=min(k, 5))
    except ValueError as err:
        return _section("Rediscovery", f"<p>{_e(err)}</p>", "rediscovery")
    if found.per_trial.empty:
        return _section("Rediscovery", "<p>No found trial to compare with the baseline yet.</p>", "rediscovery")
    fields = list(analysis.REDISCOVERY_FIELDS)
    rows = [[_e(int(r["stage"])), *[_fmt(r[f], "pct") for f in fields], _fmt(r["agreement"], "pct")]
            for _, r in found.per_stage.iterrows()]
    body = (f'<p>Rediscovery score <span class="big">{found.score:.3f}</span> &mdash; the share of (stage, field) '
            f"choices on which the {len(found.per_trial)} best found architectures agree with the baseline "
            f'<span class="arch">{_e(found.baseline)}</span> (1.0 = the search found the baseline).</p>')
    body += _table(["stage", *fields, "agreement"], rows, numeric=[True] * (len(fields) + 2))
    trial_rows = [[_e(r["number"]), f'<span class="arch">{_e(r["arch"])}</span>', _fmt(r["reward"]),
                   _fmt(r["score"])] for _, r in found.per_trial.iterrows()]
    body += _table(["trial", "arch", "reward", "score"], trial_rows, numeric=[True, False, True, True])
    return _section("Rediscovery of the baseline", body, "rediscovery")


def _fidelity_section(run: str | Path) -> str:
    """What ``nas fidelity`` found, when it has run: per long setting a scatter, the figures, the trials."""
    from nas import plots
    from nas.fidelity import LEVEL, RELIABLE_TAU, read_checks

    try:
        checks = read_checks(run)
    except ValueError as err:  # a damaged fidelity.json costs its section, not the report
        return _section("Proxy fidelity", f"<p>{_e(err)}</p>", "fidelity")
    if not checks:
        return ""
    body = ("<p>The best trials and some drawn at random, trained again for longer with the same data split and "
            "seeds (<code>nas fidelity</code>): does the proxy rank them as longer training does? Kendall's "
            f"tau and Spearman's rho with {LEVEL:.0%} bootstrap intervals; the top-K overlap is the share of the "
            "K best by proxy accuracy that are also the K best after the long training.</p>")
    for check in checks:
        body += f"<h3>{_e(check.epochs)} epochs at {_e(check.resolution)} px</h3><p>{_e(check.summary())}.</p>"
        if check.reliable is False:
            body += (f'<p class="bad"><b>Warning:</b> Kendall\'s tau is below {RELIABLE_TAU}: the proxy does not '
                     "rank these networks reliably.</p>")
        if check.agreement is not None:
            body += _plot(lambda c=check: plots.fidelity_figure(c), "proxy against long accuracy")
        rows = [[_e(t.number), _e(t.chosen), f'<span class="arch">{_e(t.arch)}</span>', _fmt(t.proxy_accuracy),
                 _fmt(t.long_accuracy) if t.long_accuracy is not None else _e(f"failed: {t.reason}")]
                for t in check.trials]
        body += _table(["trial", "chosen", "arch", "proxy accuracy", "long accuracy"], rows,
                       numeric=[True, False, False, True, True])
    return _section("Proxy fidelity", body, "fidelity")


def _failures_section(s: dict[str, Any]) -> str:
    if not s["failures"]:
        return _section("Failures", "<p>None: every finished trial is COMPLETE.</p>", "failures")
    rows = [[_e(f["number"]), _e(f["state"]), _e(f["reason"] or "–")] for f in s["failures"]]
    return _section("Failures and pruned trials", _table(["trial", "state", "reason"], rows,
                                                         numeric=[True, False, False]), "failures")
