"""Image-embedding throughput: `AltaModel.get_image_features` vs a plain `ViTMAEModel` of the same size.

    python -m benchmarks.bench_model_image_throughput [--batch-size 16] [--rounds 5]

Base geometry, CPU, eval mode, no_grad, one process, the models timed alternately (medians over rounds).
Compared: the plain ViTMAEModel without masking (mask_ratio 0: every patch kept; its forward still draws and
argsorts the shuffle noise), the same ViTMAEModel with ALTA's adapters injected, and AltaModel's image path
(patch embedding, view/time embedding, adapted layers, final norm, projection of [CLS]).
"""

import argparse
import copy
import statistics
import time

import torch



def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    from peft import inject_adapter_in_model
    from transformers import ViTMAEModel

    from alta_hf.modeling_alta import AltaConfig, AltaModel
    from alta_hf.modeling_alta.adapters_alta import ADAPTER_NAME, tower_adapter_config

    torch.manual_seed(0)
    config = AltaConfig()
    alta = AltaModel(config).eval()
    plain_config = copy.deepcopy(config.vision_config)
    plain_config.mask_ratio = 0.0
    plain = ViTMAEModel(plain_config).eval()
    adapted = ViTMAEModel(plain_config).eval()
    inject_adapter_in_model(tower_adapter_config(config, "vision"), adapted, adapter_name=ADAPTER_NAME)
    size = config.vision_config.image_size
    images = torch.randn(args.batch_size, config.vision_config.num_channels, size, size)

    candidates = {
        "ViTMAEModel (plain, mask_ratio 0)": lambda: plain(images).last_hidden_state,
        "ViTMAEModel + ALTA adapters": lambda: adapted(images).last_hidden_state,
        "AltaModel.get_image_features": lambda: alta.get_image_features(images).pooler_output,
    }
    times = {name: [] for name in candidates}
    with torch.no_grad():
        for run in candidates.values():
            run()  # warm-up
        for _ in range(args.rounds):
            for name, run in candidates.items():
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
    throughput = {name: args.batch_size / statistics.median(values) for name, values in times.items()}
    reference = throughput["ViTMAEModel (plain, mask_ratio 0)"]
    adapted_reference = throughput["ViTMAEModel + ALTA adapters"]
    print(f"batch {args.batch_size}, {args.rounds} rounds, torch threads {torch.get_num_threads()}")
    print("| image path | images/s | vs plain ViTMAE | vs ViTMAE + adapters |")
    print("|---|---:|---:|---:|")
    for name, value in throughput.items():
        print(f"| {name} | {value:.2f} | {value / reference:.3f} | {value / adapted_reference:.3f} |")


if __name__ == "__main__":
    main()
