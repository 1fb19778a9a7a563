"""bench/privacy/report.py: turns `splitmesh privacy-audit` JSON into the
Markdown table and the PNG plot (gnuplot) of bench/results/privacy.*.

usage: report.py privacy.json OUT_PREFIX   (writes OUT_PREFIX.md and .png)
Standard library only; the plot needs gnuplot (gnuplot-nox).
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile


def main():
    src, prefix = sys.argv[1], sys.argv[2]
    with open(src) as f:
        r = json.load(f)
    rows = r["results"]
    depths = sorted({x["L"] for x in rows})
    sigmas = sorted({x["sigma"] for x in rows})
    md = []
    md.append("# Privacy audit: token recovery from link activations\n")
    md.append(f"Model `{r['model']}` ({r['format']} weights, {r['n_layers']} layers, dim {r['dim']}, "
              f"vocabulary {r['vocab']}; chance = {r['chance']:.2g}). Link encoding `{r['link_dtype']}`. "
              f"Attacks evaluated on the first {r['eval']['tokens']} tokens of `{r['eval']['file']}` "
              f"(windows of {r['eval']['window']} from an empty cache); the probe is fitted on the first "
              f"{r['calib']['tokens']} tokens of `{r['calib']['file']}`. Noise: {r['noise']}. "
              f"Quality: top-1 agreement of the next-token argmax with the unsplit model, and perplexity "
              f"over {r['eval']['predictions']} predictions (unsplit model: {r['clean_perplexity']:.2f}). "
              f"Produced by `bench/privacy/run.sh` in {r['seconds']:.0f} s.\n")
    md.append("Attacks (the attacker holds the public weights):\n")
    for k, v in r["attacks"].items():
        md.append(f"- `{k}`: {v}")
    md.append("")
    layer = all("nn_layer_recovery" in x for x in rows)
    if layer:
        md.append("| L | sigma | act RMS | nn (embeddings) | nn centred | nn (layer-L table) | "
                  "nn layer centred | linear probe | top-1 agreement | perplexity |")
        md.append("|---|---|---|---|---|---|---|---|---|---|")
    else:
        md.append("| L | sigma | act RMS | nn | nn centred | linear probe | top-1 agreement | perplexity |")
        md.append("|---|---|---|---|---|---|---|---|")
    for x in rows:
        cells = [f"{x['L']}", f"{x['sigma']:g}", f"{x['act_rms']:.2f}", f"{x['nn_recovery']:.3f}",
                 f"{x['nn_centred_recovery']:.3f}"]
        if layer:
            cells += [f"{x['nn_layer_recovery']:.3f}", f"{x['nn_layer_centred_recovery']:.3f}"]
        cells += [f"{x['probe_recovery']:.3f}", f"{x['top1_agreement']:.3f}", f"{x['perplexity']:.2f}"]
        md.append("| " + " | ".join(cells) + " |")
    md.append("")
    md.append(f"Recovery rates are shares of {r['eval']['tokens']} positions: one position is "
              f"{1 / r['eval']['tokens']:.4f}; a binomial 95% interval at p = 0.5 is about "
              f"+-{1.96 * (0.25 / r['eval']['tokens']) ** 0.5:.3f}.")
    if layer and "layer_table_seconds" in r:
        md.append("")
        md.append(f"The layer-L tables (every vocabulary token alone through layers [0, L), built "
                  f"incrementally over the depths) took {r['layer_table_seconds']:.0f} s of the run.")
    with open(prefix + ".md", "w") as f:
        f.write("\n".join(md) + "\n")

    if not shutil.which("gnuplot"):
        print("report.py: gnuplot not found, no PNG", file=sys.stderr)
        return
    with tempfile.TemporaryDirectory() as tmp:
        for L in depths:
            with open(os.path.join(tmp, f"L{L}.dat"), "w") as f:
                for x in sorted((x for x in rows if x["L"] == L), key=lambda x: x["sigma"]):
                    # sigma 0 drawn at 0.003 on the log axis
                    s = x["sigma"] if x["sigma"] > 0 else 0.003
                    f.write(f"{s} {x['probe_recovery']} {x['nn_centred_recovery']} "
                            f"{x['top1_agreement']} {x['perplexity']} "
                            f"{x.get('nn_layer_recovery', 0)} {x.get('nn_layer_centred_recovery', 0)}\n")
        plots = lambda col: ", ".join(
            f"'{tmp}/L{L}.dat' using 1:{col} with linespoints lw 2 lc {i + 1} title 'L={L}'"
            for i, L in enumerate(depths))
        layer_panel = ""
        if layer:
            centred = plots(7).replace("lw 2", "lw 1 dt 2").replace("title 'L={", "notitle '{").replace("title 'L=", "notitle 'L=")
            layer_panel = ("set title 'nn over the layer-L table (token alone through [0, L)); dashed: centred'\n"
                           "set key center right\n"
                           f"plot {plots(6)}, {centred}\n"
                           "set key bottom left")
        script = f"""
set terminal pngcairo size {2000 if layer else 1500},480 font ',10' noenhanced
set output '{prefix}.png'
set multiplot layout 1,{4 if layer else 3} title 'splitmesh privacy audit: {r["model"]}, {r["link_dtype"]} link, {r["eval"]["tokens"]} eval tokens (sigma 0 drawn at 0.003)'
set logscale x
set xlabel 'noise sigma (x activation RMS)'
set key bottom left
set yrange [0:1]
set ylabel 'tokens recovered'
set title 'linear probe (ridge -> embedding -> nn)'
plot {plots(2)}
{layer_panel}
set title 'top-1 agreement with the unsplit model'
set ylabel 'agreement'
plot {plots(4)}
set autoscale y
set logscale y
set title 'perplexity (unsplit: {r["clean_perplexity"]:.2f})'
set ylabel 'perplexity'
plot {plots(5)}
unset multiplot
"""
        subprocess.run(["gnuplot"], input=script.encode(), check=True)


if __name__ == "__main__":
    main()
