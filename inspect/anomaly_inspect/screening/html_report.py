"""A self-contained screening report: one HTML file, inline CSS / JS / SVG, no network.

Contents: summary counts, how the threshold was calibrated (expected FPR and
the number of calibration images), the score histogram with the threshold,
ROC curve + AUROC when labels are known, and a sortable table with
thumbnails and heatmap overlays. Thumbnails are inlined as data URIs for up to
``EMBED_LIMIT`` rows (one portable file); above that they are relative links
into the results folder, to keep the page light. Rows whose ``explain`` column
names a strip that ``screen --explain`` drew for them get a "why?" cell: the strip
(suspicious patches beside the normal patches they were compared with) is decoded
only when opened, so the page opens as fast with or without them. Strips are
inlined with the thumbnails, up to ``STRIP_EMBED_LIMIT`` strips; above that they
are relative links into ``explain/``.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..evaluation.metrics import auroc
from ..files import write_text

if TYPE_CHECKING:
    from .model import Model

EMBED_LIMIT = 2000
STRIP_EMBED_LIMIT = 200  # explanation strips (~70 kB each) are inlined only up to this many
REPORT_HTML = "report.html"
#: the title every report of this tool has had, near its start: what tells it from a user's page
REPORT_TITLE = "<title>anomaly-inspect screening report</title>"


def is_report(path: Path) -> bool:
    """Whether the file at ``path`` begins as the reports of this tool do (an HTML page with
    :data:`REPORT_TITLE` in its first 512 bytes); one that cannot be read raises naming it."""
    with open(path, "rb") as fh:
        head = fh.read(512)
    return head.startswith(b"<!DOCTYPE html>") and REPORT_TITLE.encode("ascii") in head


_CSS = """
body{font:14px/1.4 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;background:#fafafa}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:24px 0 8px}
.muted{color:#666}.cards{display:flex;gap:12px;flex-wrap:wrap;margin:12px 0}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:10px 14px;min-width:110px}
.card b{display:block;font-size:22px}.flag b{color:#c62828}.err b{color:#ef6c00}.ok b{color:#2e7d32}
.warn{background:#fff3e0;border:1px solid #ffb74d;padding:8px 12px;border-radius:6px}
.charts{display:flex;gap:24px;flex-wrap:wrap}svg{background:#fff;border:1px solid #ddd;border-radius:6px}
table{border-collapse:collapse;background:#fff;width:100%}th,td{border-bottom:1px solid #eee;padding:4px 8px;text-align:left;vertical-align:middle}
th{cursor:pointer;position:sticky;top:0;background:#f0f0f0;user-select:none}th.asc::after{content:" \\25B2"}th.desc::after{content:" \\25BC"}
td.num{text-align:right;font-variant-numeric:tabular-nums}td img{display:block;max-height:96px}
tr.anomalous td.dec{color:#c62828;font-weight:600}tr.error td.dec{color:#ef6c00;font-weight:600}
td.path{max-width:420px;word-break:break-all}details.why summary{cursor:pointer;color:#3949ab;white-space:nowrap}
tr.why-row td{background:#f5f5f5}tr.why-row img{max-height:none;max-width:100%}input#filter{margin:4px 0 8px;padding:4px 8px;width:320px}
dl{display:grid;grid-template-columns:max-content auto;gap:2px 12px;margin:0}dt{color:#666}
"""

_JS = """
(function(){
  var table=document.getElementById('results'), body=table.tBodies[0];
  var heads=table.tHead.rows[0].cells;
  function key(row,i,type){var v=row.cells[i].getAttribute('data-v');
    if(type==='num'){var f=parseFloat(v);return isNaN(f)?-Infinity:f;}return v||'';}
  for(var i=0;i<heads.length;i++){(function(i){var h=heads[i];var type=h.getAttribute('data-type');
    if(!type)return;h.addEventListener('click',function(){
      var asc=!h.classList.contains('asc');
      for(var j=0;j<heads.length;j++)heads[j].classList.remove('asc','desc');
      h.classList.add(asc?'asc':'desc');
      var rows=Array.prototype.filter.call(body.rows,function(r){return !r.classList.contains('why-row');});
      rows.sort(function(a,b){var x=key(a,i,type),y=key(b,i,type);
        var c=x<y?-1:(x>y?1:0);return asc?c:-c;});
      var frag=document.createDocumentFragment();rows.forEach(function(r){frag.appendChild(r);
        var w=r.getAttribute('data-why');if(w)frag.appendChild(document.getElementById(w));});
      body.appendChild(frag);});})(i);}
  var filter=document.getElementById('filter');
  function companion(r){var w=r.getAttribute('data-why');return w?document.getElementById(w):null;}
  function showWhy(r){var c=companion(r);if(!c)return;var d=r.querySelector('details.why');
    c.hidden=!(d&&d.open)||r.style.display==='none';
    var img=c.querySelector('img[data-src]');
    if(!c.hidden&&img){img.src=img.getAttribute('data-src');img.removeAttribute('data-src');}}
  filter.addEventListener('input',function(){var q=filter.value.toLowerCase();
    Array.prototype.forEach.call(body.rows,function(r){if(r.classList.contains('why-row'))return;
      r.style.display=r.textContent.toLowerCase().indexOf(q)>=0?'':'none';showWhy(r);});});
  Array.prototype.forEach.call(body.querySelectorAll('tr[data-why]'),function(r){
    var d=r.querySelector('details.why');d.addEventListener('toggle',function(){showWhy(r);});showWhy(r);});
  document.body.setAttribute('data-ready','1');
})();
"""


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _esc(v) -> str:
    return html.escape(str(v), quote=True)


def _img_src(out_dir: Path, rel: str, embed: bool) -> str | None:
    path = out_dir / rel
    if not path.is_file():
        return None
    if not embed:
        return "/".join(_url_quote(part) for part in rel.split("/"))
    return "data:image/jpeg;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _url_quote(part: str) -> str:
    from urllib.parse import quote

    return quote(part)


def histogram_svg(scores: np.ndarray, labels: np.ndarray | None, threshold: float,
                  width: int = 560, height: int = 240, bins: int = 40) -> str:
    """Inline SVG histogram of ``scores`` (stacked by label when given) with the threshold line."""
    pad_l, pad_r, pad_t, pad_b = 44, 12, (24 if labels is None else 50), 36
    if scores.size == 0:
        return f'<svg id="histogram" width="{width}" height="{height}"><text x="20" y="40">no scores</text></svg>'
    lo, hi = float(min(scores.min(), threshold)), float(max(scores.max(), threshold))
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    span = hi - lo
    lo, hi = lo - 0.02 * span, hi + 0.02 * span
    edges = np.linspace(lo, hi, bins + 1)
    groups = [("all", "#5c6bc0", np.ones(scores.size, bool))] if labels is None else [
        ("normal", "#43a047", labels == 0), ("anomalous", "#e53935", labels == 1),
        ("unlabelled", "#9e9e9e", labels < 0)]
    counts = [np.histogram(scores[m], edges)[0] for _, _, m in groups]
    top = max(1, int(np.sum(counts, axis=0).max()))
    pw, ph = width - pad_l - pad_r, height - pad_t - pad_b
    x = lambda v: pad_l + (v - lo) / (hi - lo) * pw  # noqa: E731
    y = lambda c: pad_t + ph - c / top * ph  # noqa: E731
    parts = [f'<svg id="histogram" width="{width}" height="{height}" '
             f'role="img" aria-label="score histogram">']
    base = np.zeros(bins)
    for (name, colour, _), c in zip(groups, counts, strict=True):
        for b in range(bins):
            if c[b]:
                parts.append(f'<rect class="bar" x="{x(edges[b]) + 0.5:.1f}" y="{y(base[b] + c[b]):.1f}" '
                             f'width="{max(pw / bins - 1, 1):.1f}" height="{c[b] / top * ph:.1f}" '
                             f'fill="{colour}"><title>{name}: {c[b]} in [{edges[b]:.3g}, '
                             f'{edges[b + 1]:.3g})</title></rect>')
        base = base + c
    tx = x(threshold)
    parts += [
        f'<line x1="{pad_l}" y1="{pad_t + ph}" x2="{pad_l + pw}" y2="{pad_t + ph}" stroke="#444"/>',
        f'<line x1="{pad_l}" y1="{pad_t}" x2="{pad_l}" y2="{pad_t + ph}" stroke="#444"/>',
        f'<line id="threshold" x1="{tx:.1f}" y1="{pad_t - 8}" x2="{tx:.1f}" y2="{pad_t + ph}" '
        f'stroke="#c62828" stroke-width="2" stroke-dasharray="5,3"/>',
        f'<text x="{tx + 4:.1f}" y="{pad_t - 10}" font-size="11" fill="#c62828">threshold {threshold:.4g}</text>',
        f'<text x="{pad_l}" y="{height - 8}" font-size="11">{lo:.3g}</text>',
        f'<text x="{pad_l + pw}" y="{height - 8}" font-size="11" text-anchor="end">{hi:.3g}</text>',
        f'<text x="{pad_l + pw / 2}" y="{height - 8}" font-size="11" text-anchor="middle">anomaly score</text>',
        f'<text x="{pad_l - 6}" y="{pad_t + 4}" font-size="11" text-anchor="end">{top}</text>',
        f'<text x="{pad_l - 6}" y="{pad_t + ph}" font-size="11" text-anchor="end">0</text>',
    ]
    if labels is not None:
        for k, (name, colour, m) in enumerate(groups):
            if m.any():
                lx = width - pad_r - 86
                parts.append(f'<rect x="{lx}" y="{4 + 13 * k}" width="9" height="9" fill="{colour}"/>'
                             f'<text x="{lx + 13}" y="{12 + 13 * k}" font-size="11">{name}</text>')
    parts.append("</svg>")
    return "".join(parts)


def roc_points(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) for every distinct threshold, from (0, 0) to (1, 1); flag = score >= t."""
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order].astype(bool)
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]
    tp, fp = np.cumsum(y)[last], np.cumsum(~y)[last]
    return np.r_[0.0, fp / max((~y).sum(), 1)], np.r_[0.0, tp / max(y.sum(), 1)]


def roc_svg(labels: np.ndarray, scores: np.ndarray, auc: float, op: tuple[float, float] | None,
            size: int = 240) -> str:
    pad = 34
    p = size - 2 * pad
    fpr, tpr = roc_points(labels, scores)
    pts = " ".join(f"{pad + f * p:.1f},{pad + (1 - t) * p:.1f}" for f, t in zip(fpr, tpr, strict=True))
    parts = [
        f'<svg id="roc" width="{size}" height="{size}" role="img" '
        f'aria-label="ROC curve">',
        f'<rect x="{pad}" y="{pad}" width="{p}" height="{p}" fill="none" stroke="#444"/>',
        f'<line x1="{pad}" y1="{pad + p}" x2="{pad + p}" y2="{pad}" stroke="#bbb" stroke-dasharray="4,3"/>',
        f'<polyline points="{pts}" fill="none" stroke="#3949ab" stroke-width="2"/>',
        f'<text x="{pad}" y="{pad - 10}" font-size="12">ROC, AUROC = {auc:.4f}</text>',
        f'<text x="{pad + p / 2}" y="{size - 8}" font-size="11" text-anchor="middle">false-positive rate</text>',
        f'<text x="12" y="{pad + p / 2}" font-size="11" text-anchor="middle" '
        f'transform="rotate(-90 12 {pad + p / 2})">true-positive rate</text>',
    ]
    if op is not None:
        parts.append(f'<circle cx="{pad + op[0] * p:.1f}" cy="{pad + (1 - op[1]) * p:.1f}" r="4" '
                     f'fill="#c62828"><title>operating point: FPR {op[0]:.3f}, TPR {op[1]:.3f}</title></circle>')
    parts.append("</svg>")
    return "".join(parts)


def _common_dir(paths: list[str]) -> str:
    if not paths:
        return ""
    try:
        common = os.path.commonpath(paths)
    except ValueError:
        return ""
    return common if len(paths) > 1 else os.path.dirname(common)


def row_counts(rows: list[dict[str, str]]) -> tuple[int, int]:
    """(flagged anomalous, errors) among the rows of results.csv, as the report shows them."""
    errors = sum(1 for r in rows if r["error"])
    return sum(1 for r in rows if not r["error"] and r["decision"] == "anomalous"), errors


def write_report(out_dir: Path, rows: list[dict[str, str]], model: Model, labels: str | None = None,
                 embed_images: bool | None = None) -> Path:
    """Write ``out_dir/report.html`` for the rows of results.csv; returns its path."""
    from .labels import resolve_labels
    from .runner import explain_relpath, row_key, thumb_relpath

    out_dir = Path(out_dir)
    embed = len(rows) <= EMBED_LIMIT if embed_images is None else embed_images
    cal = model.calibration
    ok = [r for r in rows if not r["error"]]
    scores = np.array([float(r["score"] or "nan") for r in ok], np.float64)  # NaN: written empty
    label_map, label_source = resolve_labels([row_key(r) for r in rows], labels)  # as named
    lab = np.array([label_map.get(row_key(r), -1) for r in ok], np.int64) if label_map else None
    n_flag, n_err = row_counts(rows)

    body = [f"<h1>Screening report</h1><div class='muted'>model fitted {_esc(model.info.created)}"
            f" &middot; {_esc(model.cfg.method)} on {_esc(model.info.backbone.get('name'))}"
            f" &middot; {len(model.info.train_images)} training images</div>"]
    body.append("<div class='cards'>"
                f"<div class='card'><b id='n-total'>{len(rows)}</b>images</div>"
                f"<div class='card flag'><b id='n-flagged'>{n_flag}</b>flagged anomalous</div>"
                f"<div class='card ok'><b id='n-normal'>{len(ok) - n_flag}</b>normal</div>"
                f"<div class='card err'><b id='n-errors'>{n_err}</b>errors</div></div>")
    lo, hi = cal.fpr_interval
    body.append(
        "<h2>Threshold</h2><dl>"
        f"<dt>threshold</dt><dd>score &gt; {cal.threshold:.6g}</dd>"
        f"<dt>target FPR</dt><dd>{cal.target_fpr:.2%}</dd>"
        f"<dt>expected FPR</dt><dd id='expected-fpr'>{cal.expected_fpr:.2%} (the {_ordinal(cal.rank) + ' ' if cal.rank > 1 else ''}largest of "
        f"{cal.n_calibration} normal calibration scores; {cal.interval_level:.0%} interval for this "
        f"calibration set {lo:.2%}&ndash;{hi:.2%})</dd>"
        f"<dt>calibration images</dt><dd id='n-calibration'>{cal.n_calibration} ({_esc(cal.source)})</dd>"
        + ("<dt>p-value</dt><dd>(1 + #calibration scores &ge; score) / (n + 1); flagged iff "
           "p &le; expected FPR</dd></dl>" if cal.has_p_values else
           "<dt>p-value</dt><dd id='no-p-values'>not available: this model's calibration record "
           "keeps no calibration scores (saved by an older version); the decisions use its "
           "threshold. Refit the model to get p-values.</dd></dl>"))
    if not cal.target_met:
        body.append(f"<p class='warn'>The target FPR of {cal.target_fpr:.2%} cannot be reached with "
                    f"{cal.n_calibration} calibration images; the threshold is the largest calibration "
                    f"score, whose expected FPR is {cal.expected_fpr:.2%}. Calibrate on more normal "
                    f"images (--calibration DIR).</p>")

    finite = np.isfinite(scores)  # a NaN score (written empty) is in no chart nor metric
    if not finite.all():
        body.append(f"<p class='muted'>{int((~finite).sum())} image(s) without a finite score "
                    f"are left out of the charts and metrics.</p>")
    charts = [histogram_svg(scores[finite], None if lab is None else lab[finite], cal.threshold)]
    metrics_html = ""
    if lab is not None:
        known = (lab >= 0) & finite
        y, s = lab[known], scores[known]
        if y.size and 0 < y.sum() < y.size:
            auc = auroc(y, s)
            flagged = s > cal.threshold
            tp, fp = int((flagged & (y == 1)).sum()), int((flagged & (y == 0)).sum())
            fn, tn = int((~flagged & (y == 1)).sum()), int((~flagged & (y == 0)).sum())
            tpr, fpr = tp / max(tp + fn, 1), fp / max(fp + tn, 1)
            charts.append(roc_svg(y, s, auc, (fpr, tpr)))
            metrics_html = (
                f"<p>Labels: {_esc(label_source)} (used for this evaluation only, never for the "
                f"threshold). <b id='auroc'>AUROC {auc:.4f}</b>. At the threshold: TPR {tpr:.2%} "
                f"({tp}/{tp + fn} anomalous flagged), observed FPR {fpr:.2%} ({fp}/{fp + tn} normal "
                f"flagged).</p>")
        else:
            metrics_html = f"<p>Labels: {_esc(label_source)}; both classes are needed for ROC/AUROC.</p>"
    body.append("<h2>Scores</h2><div class='charts'>" + "".join(charts) + "</div>" + metrics_html)

    base = _common_dir([r["path"] for r in rows])
    head = ["<th>image</th>", "<th data-type='str'>path</th>", "<th data-type='num'>score</th>",
            "<th data-type='num'>p-value</th>", "<th data-type='str'>decision</th>"]
    if label_map:
        head.append("<th data-type='num'>label</th>")
    head += ["<th>overlay</th>"]
    # only the strip recorded for the row (not one an earlier run, or model, left on disk)
    strip_rows = [row_key(r) for r in rows if r.get("explain")
                  and r["explain"] == explain_relpath(row_key(r))
                  and (out_dir / r["explain"]).is_file()]
    embed_strips = embed and len(strip_rows) <= STRIP_EMBED_LIMIT
    strips = {p: _img_src(out_dir, explain_relpath(p), embed_strips) for p in strip_rows}
    if strips:
        head.append("<th>why?</th>")
    head.append("<th data-type='str'>error</th>")
    trs = []
    for r in sorted(rows, key=lambda r: -float(r["score"]) if r["score"] else math.inf):
        path = r["path"]
        shown = os.path.relpath(path, base) if base else path
        thumb = None if r["error"] else _img_src(out_dir, thumb_relpath(row_key(r)), embed)
        img = f"<img src='{thumb}' alt='' loading='lazy'>" if thumb else ""
        ov = ""
        if r["overlay"]:
            ov_thumb = _img_src(out_dir, thumb_relpath(row_key(r), overlay=True), embed)
            href = "/".join(_url_quote(p) for p in r["overlay"].split("/"))
            ov = f"<a href='{href}'>" + (f"<img src='{ov_thumb}' alt='overlay' loading='lazy'>"
                                          if ov_thumb else "overlay") + "</a>"
        cls = r["decision"] if r["decision"] in ("anomalous", "error") else ""
        cells = [f"<td>{img}</td>",
                 f"<td class='path' data-v='{_esc(shown)}' title='{_esc(path)}'>{_esc(shown)}</td>",
                 f"<td class='num' data-v='{_esc(r['score'])}'>{_esc(r['score'])}</td>",
                 f"<td class='num' data-v='{_esc(r['p_value'])}'>{_esc(r['p_value'])}</td>",
                 f"<td class='dec' data-v='{_esc(r['decision'])}'>{_esc(r['decision'])}</td>"]
        if label_map:
            lv = label_map.get(row_key(r))
            cells.append(f"<td data-v='{'' if lv is None else lv}'>"
                         f"{'' if lv is None else ('anomalous' if lv else 'normal')}</td>")
        cells.append(f"<td>{ov}</td>")
        if strips:
            cells.append("<td>" + ("<details class='why'><summary>nearest normal patches</summary>"
                                   "</details>" if row_key(r) in strips else "") + "</td>")
        cells.append(f"<td data-v='{_esc(r['error'])}'>{_esc(r['error'])}</td>")
        strip = strips.get(row_key(r))
        why = f" data-why='why{len(trs)}'" if strip else ""
        trs.append(f"<tr class='{cls}'{why}>" + "".join(cells) + "</tr>")
        if strip:  # the strip's own full-width row, shown (and its image loaded) when opened
            trs.append(f"<tr class='why-row' id='why{len(trs) - 1}' hidden><td colspan='{len(head)}'>"
                       f"<img data-src='{strip}' alt='nearest normal patches of {_esc(shown)}'>"
                       "</td></tr>")
    body.append(f"<h2>Images</h2><div class='muted'>paths relative to {_esc(base or '/')}; click a "
                f"column to sort, an overlay to open it at full size</div>"
                "<input id='filter' type='search' placeholder='filter rows'>"
                "<table id='results'><thead><tr>" + "".join(head) + "</tr></thead><tbody>"
                + "".join(trs) + "</tbody></table>")
    summary = {"n_images": len(rows), "n_flagged": n_flag, "n_errors": n_err,
               "threshold": cal.threshold, "expected_fpr": cal.expected_fpr,
               "n_calibration": cal.n_calibration}
    page = ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            + REPORT_TITLE + "<style>" + _CSS + "</style></head><body>"
            + "".join(body)
            + "<script type='application/json' id='summary'>"
            + json.dumps(summary).replace("</", "<\\/") + "</script>"
            + "<script>" + _JS + "</script></body></html>")
    return write_text(out_dir / REPORT_HTML, page, errors="replace")
