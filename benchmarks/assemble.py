"""Assemble docs/benchmarks.md from the per-benchmark sections in benchmarks/results/.

Each benchmark script writes its own section (medians, ratios against the baseline measured
in the same run, the device, and the command that reproduces it). Run:

    .venv/bin/python benchmarks/assemble.py
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ORDER = ["spectral", "spectral_2threads", "gpt2", "powerlaw", "false_alarm", "trainer", "monitor",
         "stream_llama_summary", "stream_llama", "stream_llama_ww_first", "stream_llama_blocks2_randomized"]

HEADER = """# Benchmarks

Every number below was produced by a script in `benchmarks/`; each section names its command,
its device and the load it ran under. All were measured on the development machine: a shared
2-core Intel Xeon CPU, no GPU (no accelerator was lent to the task that wrote them, so **no GPU
number exists yet**). The machine was shared with other jobs while these ran; ratios are
against the baseline measured in the same run, with medians over repeats, and the sections say
where load forced one BLAS thread per process for both tools.

This file is assembled from `benchmarks/results/*.md` by `benchmarks/assemble.py`.

| target (issue) | measured | met? |
|---|---|---|
| full randomized analysis >= 10x WeightWatcher on the study's MLP (#2) | 72.8x (1 thread each); 86.4x (default 2 threads, quieter machine) | yes |
| >= 5x WeightWatcher on a 4096x4096 layer (#2) | 10.9x (9.6x all-float64), 1 thread each; 8.0x (7.1x all-float64), default 2 threads | yes |
| GPT-2-small shapes >= 5x WeightWatcher (#3) | 10.9x, 1 thread each | yes |
| TinyLlama-shaped sharded safetensors, streamed (#13): >= 5x WeightWatcher, <= 1/2 its memory, <= 3x the largest layer, same alpha | 1.2x / 2.9x (alpha only, 22 blocks, two runs), 4.7x randomized (2 blocks); 0.07-0.08x its memory; 2.0x the largest layer (7.9x with traps); 156/156 alphas within 6e-13 | speed no; memory yes (alpha only); alpha yes |
| trainer >= 1.3x the Omnigrok-style loop on CPU (#4) | 1.51x (1.35x in an earlier, busier run) | yes |
| GPU: trainer 3x, R=32 in 2x, paper preset < 30 min; 4096 analysis on GPU (#2, #4, #17) | not measured: no GPU lent; one script prepared for the run (`make gpu-check`, section "GPU check" below) | open |

"""


def main() -> None:
    parts = [HEADER]
    results = ROOT / "benchmarks" / "results"
    names = ORDER + sorted(p.stem for p in results.glob("*.md") if p.stem not in ORDER)
    for name in names:
        path = results / f"{name}.md"
        if path.exists():
            parts.append(path.read_text().strip() + "\n")
    (ROOT / "docs" / "benchmarks.md").write_text("\n".join(parts))


if __name__ == "__main__":
    main()
