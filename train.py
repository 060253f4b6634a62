#!/usr/bin/env python
"""Pre-train ALTA with Accelerate: one CPU, one GPU, many GPUs or many nodes, unchanged.

    accelerate launch train.py --config configs/alta_base_mimic.yaml
    accelerate launch --config_file configs/accelerate/multi_gpu_8.yaml train.py --config configs/alta_base_mimic.yaml
    python train.py --config configs/demo.yaml --num_train_epochs 2        # a single process needs no launcher

Two CPU processes (gloo): `ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 --num_machines 1
--mixed_precision no --dynamo_backend no train.py --config configs/demo.yaml`. The loop itself is
`training/loop.py` (`from training.loop import main`).
"""

from alta_hf.training.loop import main

if __name__ == "__main__":
    main()
