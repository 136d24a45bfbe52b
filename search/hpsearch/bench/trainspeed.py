"""Training speed of whole trials, as `train()` measures it: one line per model with its training images per
second (evaluation excluded), its wall time and the precision it trained in.

    python search/hpsearch/bench/trainspeed.py [--models fashion_cnn,mlp] [--images 10000] [--epochs 2]

It runs as a file so that it can time another checkout too (`PYTHONPATH=OTHER/search python .../trainspeed.py`):
it uses only what every version of the training part has (TrialConfig, train, TrainResult), so two checkouts can
be compared side by side, alternating, on one machine. The models are bench.MODELS's, each on its data (Fashion-MNIST
from /usr/share/datasets/fashion-mnist for the small nets, synthetic CIFAR-shaped images for the others), trained on
the first `--images` training images with the benchmark's optimizer at batch `--batch-size`.
"""

from __future__ import annotations

import argparse
import json
import time

from hpsearch.space.config import DataConfig, OptimizerConfig, SyntheticConfig, TrainConfig, TrialConfig
from hpsearch.training.train import train

FASHION = {"fashion_cnn": {"name": "cnn", "stages": 2, "blocks_per_stage": 2, "widths": (32, 64)},
           "mlp": {"name": "mlp", "hidden": (512, 128)}}
CIFAR = {"smoke": {"name": "cnn", "stages": 3, "blocks_per_stage": 1, "width": 16},
         "cnn6": {"name": "cnn", "stages": 3, "blocks_per_stage": 2, "widths": (64, 128, 256)},
         "resnet18": {"name": "resnet18"}}


def config(model: str, images: int, epochs: int, batch_size: int, precision: str) -> TrialConfig:
    from hpsearch.space.config import ModelConfig

    if model in FASHION:
        data = DataConfig(dataset="fashion_mnist", root="/usr/share/datasets/fashion-mnist", download=False,
                          val_size=1000, train_limit=images)
        fields = FASHION[model]
    else:
        data = DataConfig(dataset="synthetic", val_size=200,
                          synthetic=SyntheticConfig(size=images + 200, test_size=10, classes=100))
        fields = CIFAR[model]
    return TrialConfig(data=data, model=ModelConfig(**fields),  # type: ignore[arg-type]
                       optimizer=OptimizerConfig(name="sgd", lr=0.05, momentum=0.9, nesterov=True,
                                                 weight_decay=5e-4),
                       train=TrainConfig(epochs=epochs, batch_size=batch_size, device="cpu", precision=precision))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="fashion_cnn,mlp")
    p.add_argument("--images", type=int, default=10_000)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--precision", default="auto")
    p.add_argument("--tag", default="", help="a label printed on each line (which checkout)")
    args = p.parse_args()
    for model in args.models.split(","):
        started = time.perf_counter()
        result = train(config(model, args.images, args.epochs, args.batch_size, args.precision))
        print(json.dumps({"tag": args.tag, "model": model, "train_img_s": round(result.train_images_per_sec, 1),
                          "wall_s": round(time.perf_counter() - started, 2),
                          "precision": getattr(result, "precision", "fp32 (the version before auto chose)"),
                          "val_acc": round(result.history[-1]["val_acc"], 4)}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
