#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Tables (markdown) and plots (gnuplot, SVG) of bench/training_tradeoffs.sh's CSV files.

usage: training_report.py OUT_DIR [LOAD]
"""
import csv
import os
import statistics
import subprocess
import sys

out = sys.argv[1]
load = sys.argv[2] if len(sys.argv) > 2 else "?"


def read(name):
    path = os.path.join(out, name)
    if not os.path.exists(path):
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def num(v, fmt="{:.1f}"):
    try:
        return fmt.format(float(v))
    except (TypeError, ValueError):
        return "n/a"


md = [f"<!-- written by bench/training_report.py; load average at the end: {load} -->", ""]
plots = []

scaling = read("scaling.csv")
if scaling:
    md += ["## Scaling", "",
           "| model | batch | ranks | link | step ms | comm share | samples/s | efficiency |"
           " model step ms | model efficiency |",
           "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in scaling:
        capped = " (CPU-capped)" if r["cpu_capped"] == "yes" else ""
        md.append(f"| {r['model']} | {r['batch']} | {r['ranks']}{capped} | {r['rate']} | "
                  f"{num(r['step_ms'], '{:.2f}')} | {num(float(r['comm_share']) * 100 if r['comm_share'] not in ('', 'nan') else 'x', '{:.0f}%')} | "
                  f"{num(r['samples_per_s'], '{:.0f}')} | {num(r['efficiency'], '{:.2f}')} | "
                  f"{num(r['model_step_ms'], '{:.2f}')} | {num(r['model_efficiency'], '{:.2f}')} |")
    md.append("")
    # One plot per model and link: samples/s against batch, measured and modelled, per N.
    for model in sorted({r["model"] for r in scaling}):
        for rate in sorted({r["rate"] for r in scaling if r["rate"] != "loopback"}):
            series = []
            base = [r for r in scaling if r["model"] == model and r["ranks"] == "1"]
            for n in sorted({r["ranks"] for r in scaling if r["ranks"] != "1"}):
                rows = [r for r in scaling if r["model"] == model and r["rate"] == rate and r["ranks"] == n]
                if rows:
                    series.append((n, rows))
            if not series:
                continue
            stem = f"scaling-{model}-{rate}"
            dat = os.path.join(out, stem + ".dat")
            with open(dat, "w", encoding="utf-8") as fh:
                fh.write("# batch samples_per_s model_samples_per_s\n")
                fh.write("# 1 rank\n")
                for r in base:
                    fh.write(f"{r['batch']} {r['samples_per_s']} {r['samples_per_s']}\n")
                for n, rows in series:
                    fh.write(f"\n\n# {n} ranks\n")
                    for r in rows:
                        ms = float(r["model_step_ms"])
                        fh.write(f"{r['batch']} {r['samples_per_s']} {1000 * float(r['batch']) / ms:.1f}\n")
            cmds = [f"'{dat}' index 0 using 1:2 with linespoints lw 2 title '1 rank (loopback)'"]
            for i, (n, _) in enumerate(series, start=1):
                tag = " (CPU-capped)" if int(n) > (os.cpu_count() or 2) else ""
                cmds.append(f"'{dat}' index {i} using 1:2 with linespoints lw 2 title '{n} hosts measured{tag}'")
                cmds.append(f"'{dat}' index {i} using 1:3 with lines dt 2 title '{n} hosts, alpha-beta model'")
            plots.append((stem, f"{model}: samples/s against global batch, {rate} links", "global batch",
                          "samples / s", cmds))
            md.append(f"![{stem}]({stem}.svg)")
    md.append("")

overlap = read("overlap.csv")
if overlap:
    md += ["## Overlap (MLP, 2 hosts, 1 Gbit/s)", "",
           "| batch | overlap step ms | blocking step ms | ratio | overlap comm share |"
           " blocking comm share | runs |", "|---:|---:|---:|---:|---:|---:|---:|"]
    for b in sorted({int(r["batch"]) for r in overlap}):
        def med(mode, key):
            v = [float(r[key]) for r in overlap if int(r["batch"]) == b and r["mode"] == mode
                 and r[key] not in ("", "nan")]
            return statistics.median(v) if v else float("nan"), len(v)
        o, n = med("overlap", "step_ms")
        k, _ = med("blocking", "step_ms")
        oc, _ = med("overlap", "comm_share")
        kc, _ = med("blocking", "comm_share")
        md.append(f"| {b} | {o:.2f} | {k:.2f} | {o / k:.2f} | {oc * 100:.0f}% | {kc * 100:.0f}% | {n} |")
    md.append("")

acc = read("accuracy.csv")
if acc:
    md += ["## Accuracy against batch size", "", "| model | batch | ranks | epochs | test accuracy |",
           "|---|---:|---:|---:|---:|"]
    for r in acc:
        md.append(f"| {r['model']} | {r['batch']} | {r['ranks']} | {r['epochs']} | {num(r['test_acc'], '{:.2f}%')} |")
    dat = os.path.join(out, "accuracy.dat")
    with open(dat, "w", encoding="utf-8") as fh:
        models = sorted({r["model"] for r in acc})
        for i, m in enumerate(models):
            fh.write(f"# {m}\n")
            for r in acc:
                if r["model"] == m:
                    fh.write(f"{r['batch']} {r['test_acc']}\n")
            fh.write("\n\n")
    plots.append(("accuracy", f"test accuracy after {acc[0]['epochs']} epoch(s) against batch",
                  "global batch", "test accuracy %",
                  [f"'{dat}' index {i} using 1:2 with linespoints lw 2 title '{m}'"
                   for i, m in enumerate(models)]))
    md += ["", "![accuracy](accuracy.svg)", ""]

with open(os.path.join(out, "training.md"), "w", encoding="utf-8") as fh:
    fh.write("\n".join(md) + "\n")

for stem, title, xl, yl, cmds in plots:
    script = "\n".join([
        "set terminal svg size 720,440 dynamic font 'sans,11'",
        f"set output '{os.path.join(out, stem + '.svg')}'",
        f"set title \"{title}\"", f"set xlabel '{xl}'", f"set ylabel '{yl}'",
        "set logscale x 2", "set key left top", "set grid",
        "plot " + ", \\\n     ".join(cmds)])
    try:
        subprocess.run(["gnuplot"], input=script, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"training_report.py: gnuplot failed for {stem}: {e}", file=sys.stderr)
print(os.path.join(out, "training.md"))
