"""Plain-text tables of an evaluation result (what `eval.py` prints)."""

__all__ = ["format_table"]


def _rows(header: list[str], rows: list[list[str]]) -> list[str]:
    """Aligned text rows: first column left-aligned, the others right-aligned."""
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]

    def line(row):
        cells = [cell.ljust(width) if i == 0 else cell.rjust(width) for i, (cell, width) in enumerate(zip(row, widths))]
        return "  ".join(cells)

    return [line(header), "  ".join("-" * width for width in widths), *(line(row) for row in rows)]


def format_table(result: dict) -> str:
    """Overall metrics, per-class precision@k and confusion matrices of a `run_task` result."""
    lines = [f"task {result['task']}  split {result['split']}  model {result['model']}"]
    skipped = result.get("images", {}).get("skipped", 0)
    if skipped:
        lines.append(f"skipped {skipped} unreadable image(s); see metrics.json 'images'")
    lines.append("")
    lines += _rows(["metric", "value"], [[name, f"{value:.4f}"] for name, value in result["metrics"].items()])
    for name, detail in result["details"].items():
        if not isinstance(detail, dict) or "per_class" not in detail:
            continue
        per_class = detail["per_class"]
        first = next(iter(per_class.values()))
        columns = [key for key in first if key.startswith("precision_at_") or key in ("precision", "recall", "f1")]
        lines += ["", f"{name} per class"]
        rows = [[str(cls), *(f"{entry[key]:.4f}" for key in columns)] for cls, entry in per_class.items()]
        lines += _rows(["class", *(key.replace("precision_at_", "P@") for key in columns)], rows)
        if skipped_k := detail.get("skipped_k"):
            lines.append(f"(P@{skipped_k} skipped: only {detail['num_candidates']} candidates)")
        if "confusion_matrix" in detail:
            names = detail["class_names"]
            lines += ["", f"{name} confusion matrix (rows true, columns predicted)"]
            lines += _rows(["", *names], [[names[i], *map(str, row)] for i, row in enumerate(detail["confusion_matrix"])])
    if "threshold_protocol_skipped" in result["details"]:
        lines += ["", f"threshold protocol skipped: {result['details']['threshold_protocol_skipped']}"]
    return "\n".join(lines)
