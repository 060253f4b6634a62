#!/usr/bin/env python
"""Evaluate an ALTA model with the paper's protocols (the checkout's entry point; installed: `alta-eval`).

    python eval.py --model DIR_OR_HUB_ID --task TASK --data DIR --output-dir OUT

The command itself is `evaluation/cli.py` (docs/evaluation.md).
"""

from alta_hf.evaluation.cli import main, parse_args

__all__ = ["main", "parse_args"]

if __name__ == "__main__":
    main()
