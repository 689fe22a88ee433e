"""Parameter counts of each preset, from its model's own tensors (`workbench.accounting.param_counts`).

`embedding` counts the token embedding, plus the output head when it is not tied; `non_embedding` is the rest.
Usage: `python -m analysis.params gemma3-27b [--json]`, `python -m analysis.params --all`.
"""

from __future__ import annotations

import json

from tabulate import tabulate

from analysis.cli import Parser
from analysis.presets_cli import add_preset_args, selected_presets
from workbench.accounting import param_counts as count_params


def main(argv: list[str] | None = None) -> None:
    parser = Parser(prog="python -m analysis.params", description=__doc__.splitlines()[0])
    add_preset_args(parser)
    args = parser.parse_args(argv)
    counts = {name: count_params(cfg) for name, cfg in selected_presets(parser, args).items()}
    if args.json:
        print(json.dumps(next(iter(counts.values())) if len(counts) == 1 else counts, indent=2))
        return
    rows = [[name, c["embedding"], c["non_embedding"], c["total"], f"{c['non_embedding'] / 1e6:,.0f}M"]
            for name, c in counts.items()]  # fmt: skip
    print(tabulate(rows, ["preset", "embedding", "non-embedding", "total", "non-emb (M)"], intfmt=","))


if __name__ == "__main__":
    main()
