"""Complete a model folder with its processor files, so that `AutoProcessor` and `transformers.pipeline` find them.

    python -m alta_hf.processing.write_processor alta-init [more folders ...]

The converters (`modeling_alta.convert_original_alta`, `modeling_alta.convert_pretrained_towers`) write the
processor themselves; this completes folders that hold a model and a tokenizer only (written by older versions of
the converters, or by hand): it writes `processor_config.json` (the default ALTA image processor) and the tokenizer
files of the folder's tokenizer, as `load_processor` builds them.
"""

import argparse
import os
import sys

from .processing_alta import load_processor

__all__ = ["main", "write_processor"]


def write_processor(model_dir, overwrite: bool = False) -> bool:
    """Save the folder's processor (`load_processor(model_dir)`) into it; returns False when one was already there
    and `overwrite` is False."""
    if os.path.isfile(os.path.join(model_dir, "processor_config.json")) and not overwrite:
        return False
    load_processor(model_dir).save_pretrained(model_dir)
    return True


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dirs", nargs="+", help="model folders with a tokenizer (vocab.txt or tokenizer.json)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing processor_config.json")
    args = parser.parse_args(argv)
    failed = 0
    for model_dir in args.model_dirs:
        try:
            written = write_processor(model_dir, overwrite=args.overwrite)
        except (OSError, ValueError) as error:
            print(f"error: {model_dir}: {error}", file=sys.stderr)
            failed += 1
            continue
        print(f"{model_dir}: {'processor written' if written else 'processor already present (--overwrite replaces it)'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
