#!/usr/bin/env bash
# The main job: install Fashion-MNIST (Debian package dataset-fashion-mnist),
# set up .venv, and train the reference MLP ResNet on the default backend.
# Extra arguments go to `needle train`, e.g.  bash scripts/train.sh --epochs 2
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=/usr/share/datasets/fashion-mnist
if [ ! -d "$DATA" ]; then
  echo "==> installing Debian package dataset-fashion-mnist"
  SUDO=""; [ "$(id -u)" = "0" ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dataset-fashion-mnist
fi
NEEDLE_WITH_TORCH=0 NEEDLE_WITH_NVRTC=0 bash scripts/bootstrap.sh
exec .venv/bin/needle train --model mlp-resnet --dataset fashion-mnist --data-dir "$DATA" \
  --epochs 10 --batch-size 128 --lr 0.001 --optimizer adam --out runs/mlp-resnet "$@"
