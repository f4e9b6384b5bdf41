"""``needle train``: train a reference model on a real dataset.

    needle train --model mlp-resnet --dataset fashion-mnist --epochs 10 --out runs/fmnist

Shows a tqdm bar per epoch (loss, accuracy, samples/s), prints train and
test accuracy, and writes into ``--out``: ``metrics.json`` (per-epoch
figures, the training loss every ``--log-every`` steps and the arguments),
``curves.png`` (loss per step and per epoch, accuracy per epoch),
``model.npz`` (weights, loadable with ``needle.load`` +
``Module.load_state_dict``) and ``checkpoint.npz`` (weights, optimizer state,
epoch and RNG state) which ``--resume`` continues from.

``--jit`` runs each training step (forward, loss, backward, optimizer step)
through ``needle.jit``: the first step runs eagerly, the second is captured
(a later batch shape, such as the last smaller batch, on its first step),
and the rest are replayed without Python per op.  The evaluation passes stay
eager.  It
excludes ``--clip`` (the global norm is read on the host) and ``--nproc``
above 1 (the allreduce of the gradients is not captured).

Model names are kebab-case (``mlp-resnet``, ``lstm-lm``); the older
``mlp_resnet`` spelling is still accepted.  Files are written like any
``open()`` (mode 0666 less the umask, so 0644 usually).  Ctrl-C stops with
a message naming the last checkpoint and the command that resumes it.

Exit codes: 0 done, 2 bad arguments or unusable data (message, no
traceback), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time

import numpy as np

from needle.cli import CommandExit, CommandParser
from needle.errors import NeedleError, StateDictError

__all__ = ["train_command", "build_parser"]

MODELS = ("mlp-resnet", "cnn", "resnet9", "lstm-lm", "transformer-lm")
DATASETS = ("fashion-mnist", "mnist", "cifar10", "ptb")


class _DefaultsHelp(argparse.ArgumentDefaultsHelpFormatter):
    """Shows "(default: X)" after each option's help, except for unset
    options and flags (their help says what unset means)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or action.default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


def _model_name(value: str) -> str:
    from .train_tasks import canonical_model

    return canonical_model(value)


def build_parser() -> argparse.ArgumentParser:
    # every option has a help text so ArgumentDefaultsHelpFormatter shows its default
    p = CommandParser(prog="needle train", formatter_class=_DefaultsHelp,
                description="Train a needle reference model and save metrics, curves and weights.")
    p.add_argument("--model", type=_model_name, choices=MODELS, default="mlp-resnet",
                   help="model to train (old spelling mlp_resnet also accepted)")
    p.add_argument("--dataset", choices=DATASETS, default="fashion-mnist", help="dataset to train on")
    p.add_argument("--data-dir", default=None,
                   help="dataset folder; unset: /usr/share/datasets/fashion-mnist for fashion-mnist "
                        "(Debian's dataset-fashion-mnist), data/<dataset> otherwise")
    p.add_argument("--download", action="store_true",
                   help="fetch the dataset into the needle cache ($NEEDLE_CACHE_DIR) when --data-dir "
                        "lacks it (cifar10, ptb)")
    p.add_argument("--device", default=None, help="cpu, numpy, cuda, cuda:N; unset: needle's default device")
    p.add_argument("--epochs", type=int, default=10, help="number of epochs")
    p.add_argument("--batch-size", type=int, default=128, help="samples (or token columns) per batch")
    p.add_argument("--lr", type=float, default=1e-3, help="initial learning rate")
    p.add_argument("--optimizer", choices=("adam", "sgd"), default="adam", help="optimizer")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (needle's averaged form)")
    p.add_argument("--weight-decay", type=float, default=1e-3, help="L2 weight decay")
    p.add_argument("--schedule", choices=("none", "step", "cosine"), default="cosine",
                   help="learning-rate schedule, stepped per epoch (cosine: lr decays from --lr to 0 "
                        "over --epochs; step: x0.1 every epochs/3; none: constant)")
    p.add_argument("--clip", type=float, default=None, help="clip gradients to this global norm (unset: no clipping)")
    p.add_argument("--out", default="runs/needle-train", help="output folder")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.npz")
    p.add_argument("--seed", type=int, default=0, help="NumPy seed (weights, shuffling, dropout)")
    p.add_argument("--max-batches", type=int, default=None,
                   help="at most K batches per epoch (smoke tests; unset: all)")
    p.add_argument("--log-every", type=int, default=10,
                   help="record the mean training loss every N steps (curves.png, metrics.json 'steps')")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--jit", action="store_true",
                   help="compile each training step with needle.jit (capture once, replay without Python "
                        "per op); not with --clip or --nproc > 1. Unset: eager")
    p.add_argument("--nproc", type=int, default=1,
                   help="data-parallel processes on this machine (needle launch / mpiexec); the global "
                        "--batch-size is split evenly across them and rank 0 alone prints and writes")
    lm = p.add_argument_group("language models (ptb)")
    lm.add_argument("--bptt", type=int, default=35, help="sequence length of truncated BPTT")
    lm.add_argument("--embedding-size", type=int, default=128, help="token embedding size")
    lm.add_argument("--hidden-size", type=int, default=128, help="hidden state size")
    lm.add_argument("--num-layers", type=int, default=1, help="stacked sequence layers")
    return p


def _fail(message: str) -> int:
    print(f"needle train: error: {message}", file=sys.stderr)
    return 2


def _validate(args):
    from .train_tasks import DOWNLOADABLE, HOW_TO_GET, MODEL_DATASETS, default_data_dir

    if args.dataset not in MODEL_DATASETS[args.model]:
        return (f"model {args.model} does not train on {args.dataset}; it takes "
                f"{', '.join(MODEL_DATASETS[args.model])}")
    for name in ("epochs", "batch_size", "log_every"):
        if getattr(args, name) < 1:
            return f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}"
    if args.max_batches is not None and args.max_batches < 1:
        return f"--max-batches must be at least 1, got {args.max_batches}"
    if not args.lr > 0:
        return f"--lr must be positive, got {args.lr}"
    problem = _validate_nproc(args) or _validate_jit(args)
    if problem:
        return problem
    if args.download and args.dataset not in DOWNLOADABLE:
        return (f"--download: needle has no downloader for {args.dataset} (only "
                f"{', '.join(DOWNLOADABLE)}); {HOW_TO_GET[args.dataset]}")
    if args.data_dir is None:
        args.data_dir = default_data_dir(args.dataset)
    return None


def _validate_jit(args):
    if not args.jit:
        return None
    # clip_grad_norm reads the global norm on the host and branches on it: a
    # replayed step runs no Python, so it would clip by the captured norm forever
    if args.clip:
        return ("--jit cannot be combined with --clip: gradient clipping reads the gradients' norm on the "
                "host, which a compiled step cannot do; drop one of them")
    # DistributedDataParallel's allreduce is a host-side collective between
    # processes, not a backend kernel a capture could record
    if args.nproc > 1:
        return (f"--jit cannot be combined with --nproc {args.nproc}: the gradient allreduce between "
                f"processes is not captured; use --jit with --nproc 1, or --nproc without --jit")
    return None


# -- data parallel (needle train --nproc N) ---------------------------------------
def max_nproc() -> int:
    """Most ranks --nproc may start on one machine: 4 per core (more only thrashes)."""
    return 4 * (os.cpu_count() or 1)


def _validate_nproc(args):
    n = args.nproc
    if n < 1:
        return f"--nproc must be at least 1, got {n}"
    if n == 1:
        return None
    if args.dataset == "ptb":
        return "--nproc > 1 trains the image models only (mlp-resnet, cnn, resnet9), not the language models"
    if n > max_nproc():
        return f"--nproc {n} is more than allowed on this machine ({max_nproc()}: 4 per core)"
    if args.batch_size % n:
        return (f"--batch-size {args.batch_size} (the global batch) must split evenly across --nproc {n} "
                f"ranks; use a multiple of {n}")
    return None


def _relaunch(argv, nproc) -> int:
    """Run this same command on ``nproc`` ranks through needle launch (mpiexec)."""
    from needle.distributed.launch import launch_command

    return launch_command(["-n", str(nproc), "-m", "needle.cli", "train", *argv])


def _join_group(args):
    """In a rank of --nproc N: join the group; ranks other than 0 go quiet."""
    import needle.distributed as dist

    dist.init_process_group()
    if dist.get_world_size() != args.nproc:
        raise SystemExit(_fail(f"--nproc {args.nproc} but the job has {dist.get_world_size()} processes"))
    args.world_size = args.nproc
    if dist.get_rank() != 0:
        args.no_progress = True
        sys.stdout = open(os.devnull, "w")  # rank 0 alone prints; errors still reach stderr
    return dist.get_rank() == 0


def _reduce_stats(stats):
    """Train figures of one rank -> figures of the whole global batch."""
    import needle as ndl
    import needle.distributed as dist

    n = stats["samples"]
    sums = ndl.Tensor(np.array([stats["loss"] * n, stats["acc"] * n, n], dtype=np.float64), dtype="float64",
                      requires_grad=False)
    loss_sum, right, total = dist.all_reduce(sums, "sum").numpy()
    elapsed = dist.all_reduce(ndl.Tensor([stats["time_s"]], dtype="float64", requires_grad=False), "max")
    elapsed = float(elapsed.numpy()[0])
    total = max(total, 1.0)
    return {"loss": loss_sum / total, "acc": right / total, "samples": int(total), "time_s": elapsed,
            "samples_per_s": total / max(elapsed, 1e-9)}
def _fetch_if_asked(args) -> None:
    """With --download, fetch the dataset into the cache unless --data-dir
    already holds it, and train from there."""
    from .train_tasks import MissingDataError, data_present, download_dataset

    if not args.download or data_present(args.dataset, args.data_dir):
        return
    print(f"needle train: {args.data_dir} lacks {args.dataset}; downloading it into the needle cache ...",
          flush=True)
    folder = download_dataset(args.dataset)
    if not os.path.isdir(folder):
        raise MissingDataError(f"--download: the download of {args.dataset} left no folder at {folder}")
    args.data_dir = folder
    print(f"needle train: using {folder}", flush=True)


def _make_optimizer(args, params):
    import needle as ndl

    if args.optimizer == "adam":
        return ndl.optim.Adam(params, lr=args.lr, weight_decay=args.weight_decay)
    return ndl.optim.SGD(params, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay)


def _make_schedule(args, opt):
    import needle as ndl

    if args.schedule == "step":
        return ndl.optim.StepLR(opt, step_size=max(1, args.epochs // 3), gamma=0.1)
    if args.schedule == "cosine":
        return ndl.optim.CosineAnnealingLR(opt, T_max=args.epochs)
    return None


# -- checkpoints ------------------------------------------------------------
# one flat file: each part's state dict under its own prefix ("model.w", "optim.t")
def _with_prefix(prefix: str, state: dict) -> dict:
    return {f"{prefix}.{k}": v for k, v in state.items()}


def _under_prefix(prefix: str, state: dict) -> dict:
    """The entries of ``state`` written by ``_with_prefix(prefix, ...)``, unprefixed."""
    head = prefix + "."
    return {k[len(head):]: v for k, v in state.items() if k.startswith(head)}


def _save_checkpoint(path, model, opt, schedule, epoch, history, args, steps=()):
    import needle as ndl

    state = _with_prefix("model", model.state_dict())
    state.update(_with_prefix("optim", opt.state_dict()))
    if schedule is not None:
        state.update(_with_prefix("schedule", {k: np.asarray(v) for k, v in schedule.state_dict().items()}))
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state.update({"rng.keys": keys, "rng.pos": np.asarray(pos), "rng.has_gauss": np.asarray(has_gauss),
                  "rng.cached_gaussian": np.asarray(cached)})
    state["epoch"] = np.asarray(epoch)
    state["history"] = np.asarray(json.dumps(history))
    state["steps"] = np.asarray(json.dumps(list(steps)))
    state["config"] = np.asarray(json.dumps({"model": args.model, "dataset": args.dataset}))
    ndl.save(state, path)


def _load_checkpoint(path, model, opt, schedule, args):
    import needle as ndl

    state = ndl.load(path)
    from .train_tasks import canonical_model

    config = _json_entry(path, state, "config", dict)
    if isinstance(config.get("model"), str):  # checkpoints written before the kebab-case names
        config["model"] = canonical_model(config["model"])
    if config != {"model": args.model, "dataset": args.dataset}:
        raise StateDictError(f"{path} was written for --model {config.get('model')} --dataset "
                             f"{config.get('dataset')}, not --model {args.model} --dataset {args.dataset}")
    epoch = _scalar_entry(path, state, "epoch", int)
    history = _json_entry(path, state, "history", list)
    rng = (_array_entry(path, state, "rng.keys", (624,)), _scalar_entry(path, state, "rng.pos", int),
           _scalar_entry(path, state, "rng.has_gauss", int), _scalar_entry(path, state, "rng.cached_gaussian", float))
    model.load_state_dict(_under_prefix("model", state))
    opt.load_state_dict(_under_prefix("optim", state))
    if schedule is not None and "schedule.base_lr" in state:
        schedule.load_state_dict(_under_prefix("schedule", state))
    steps = _json_entry(path, state, "steps", list) if "steps" in state else []  # older checkpoints: none
    np.random.set_state(("MT19937",) + rng)
    return epoch, history, steps


# -- checkpoint entries, each checked before any is applied -------------------
def _entry(path, state, key):
    if key not in state:
        raise StateDictError(f"{path}: missing entry {key!r} (not a needle train checkpoint?)")
    return state[key]


def _json_entry(path, state, key, kind):
    value = _entry(path, state, key)
    try:
        if value.dtype.kind != "U" or value.ndim != 0:
            raise ValueError(f"a {value.dtype} array of shape {value.shape}")
        parsed = json.loads(str(value))
    except (ValueError, AttributeError) as exc:
        raise StateDictError(f"{path}: entry {key!r} is not the JSON text it should be ({exc})") from None
    if not isinstance(parsed, kind):
        raise StateDictError(f"{path}: entry {key!r} holds a {type(parsed).__name__}, expected a {kind.__name__}")
    return parsed


def _scalar_entry(path, state, key, kind):
    value = np.asarray(_entry(path, state, key))
    if value.size != 1 or value.dtype.kind not in "biuf":
        raise StateDictError(f"{path}: entry {key!r} must be one number, got {value.dtype} of shape {value.shape}")
    return kind(value.item())


def _array_entry(path, state, key, shape):
    value = np.asarray(_entry(path, state, key))
    if value.shape != shape or value.dtype.kind not in "iu":
        raise StateDictError(f"{path}: entry {key!r} must be integers of shape {shape}, got {value.dtype} "
                             f"of shape {value.shape}")
    return value.astype(np.uint32)


# -- outputs ----------------------------------------------------------------
def _write_json(path, obj):
    tmp = path + ".part"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)


def plot_curves(history, path, steps=()) -> bool:
    """Training loss per logged step and loss/accuracy per epoch (train and
    test) as a PNG; False if matplotlib is missing.  ``steps``: records
    ``{"epoch": fractional epoch, "loss": ...}`` (so even a 1-epoch run draws
    a curve rather than two dots)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    if steps:
        ax_loss.plot([s["epoch"] for s in steps], [s["loss"] for s in steps], "-", lw=1, alpha=0.6,
                     label="train (per step)")
    for split, style in (("train", "-o"), ("test", "-s")):
        ax_loss.plot(epochs, [h[f"{split}_loss"] for h in history], style, label=split)
        ax_acc.plot(epochs, [h[f"{split}_acc"] for h in history], style, label=split)
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    ax_loss.set_xlim(left=0)
    ax_acc.set_xlim(0, max(epochs + [1]) + 0.5)
    ax_acc.set_xticks(range(0, max(epochs + [1]) + 1))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def _progress(args, total, desc):
    if args.no_progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="batch", leave=False, dynamic_ncols=True, file=sys.stderr)


def _run_epoch(task, args, opt, desc, steps=None, epoch=0, train_step=None) -> dict:
    """One training (``opt`` given) or test pass of ``task`` with a progress
    bar -> ``{"loss", "acc", "samples", "time_s", "samples_per_s"}``.
    ``steps`` (training): a list receiving ``{"step", "epoch", "loss"}``, the
    mean loss per sample of each ``--log-every`` batches.  ``train_step``:
    the compiled step of ``--jit`` (training passes only)."""
    from .training import run_epoch

    total = task.num_train_batches if opt is not None else task.num_test_batches
    bar = _progress(args, min(total, args.max_batches or total), desc)
    start = time.perf_counter()

    def postfix(totals, refresh):
        bar.set_postfix(loss=f"{totals.mean_loss:.4f}", acc=f"{totals.accuracy:.4f}",
                        samples_s=f"{totals.count / max(time.perf_counter() - start, 1e-9):.0f}",
                        refresh=refresh)

    window = {"batches": 0, "loss": 0.0, "count": 0, "seen": 0}
    planned = max(min(total, args.max_batches or total), 1)
    first_step = (epoch - 1) * planned

    def log_step(totals):
        window["batches"] += 1
        window["seen"] += 1
        window["loss"] = totals.loss_sum - window.get("loss_base", 0.0)
        window["count"] = totals.count - window.get("count_base", 0)
        if window["batches"] == args.log_every or window["seen"] == planned:
            if window["count"]:
                steps.append({"step": first_step + window["seen"], "epoch": epoch - 1 + window["seen"] / planned,
                              "loss": window["loss"] / window["count"]})
            window.update(batches=0, loss_base=totals.loss_sum, count_base=totals.count)

    def on_batch(totals):
        if steps is not None:
            log_step(totals)
        if bar is not None:
            bar.update(1)
            postfix(totals, False)

    batches = task.train_batches() if opt is not None else task.test_batches()
    totals = run_epoch(batches, task.forward, task.model, opt, clip=args.clip if opt is not None else None,
                       max_batches=args.max_batches,
                       on_batch=on_batch if (bar is not None or steps is not None) else None,
                       step=train_step if opt is not None else None)
    elapsed = time.perf_counter() - start
    if bar is not None:
        if totals.count:  # the final figures, even when the epoch beat tqdm's refresh interval
            postfix(totals, True)
        bar.close()
    n = max(totals.count, 1)
    return {"loss": totals.loss_sum / n, "acc": totals.correct / n, "samples": totals.count,
            "time_s": elapsed, "samples_per_s": totals.count / max(elapsed, 1e-9)}


# -- the command --------------------------------------------------------------
def train_command(argv: list[str]) -> int:
    """Entry point of ``needle train``; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(list(argv))
    except CommandExit as stop:
        return stop.status
    problem = _validate(args)
    if problem:
        return _fail(problem)
    if args.nproc > 1:
        from needle.distributed import launched_under_mpi

        if not launched_under_mpi():
            return _relaunch(list(argv), args.nproc)
    progress = {"epoch": 0, "saved": None}
    try:
        return _train(args, progress)
    except KeyboardInterrupt:
        print("\n" + _interrupt_message(args, argv, progress), file=sys.stderr)
        return 130


def _interrupt_message(args, argv, progress) -> str:
    """Where the last checkpoint is and the exact command that resumes from it."""
    resume = ["needle", "train"] + [a for a in argv if a != "--resume"] + ["--resume"]
    ckpt = os.path.join(args.out, "checkpoint.npz")
    if progress["saved"] is None:
        if os.path.isfile(ckpt) and args.resume:
            return (f"needle train: interrupted; no new epoch finished, {ckpt} is unchanged. "
                    f"Resume with:\n  {shlex.join(resume)}")
        return (f"needle train: interrupted during epoch {progress['epoch']}, before the first checkpoint "
                f"(written after each epoch); nothing to resume. Start again with:\n  "
                f"{shlex.join(['needle', 'train'] + [a for a in argv if a != '--resume'])}")
    return (f"needle train: interrupted during epoch {progress['epoch']}; the checkpoint {ckpt} holds "
            f"epoch {progress['saved']}. Resume with:\n  {shlex.join(resume)}")


def _train(args, progress) -> int:
    import needle as ndl
    from needle.errors import BackendUnavailableError, DataFormatError

    from .train_tasks import MissingDataError, build_task

    # a training run reads only the parameters' gradients: PyTorch's rule lets
    # each step's graph go at once (see needle.autograd.KEEP_INTERIOR_GRADS)
    ndl.autograd.KEEP_INTERIOR_GRADS = False
    is_main = _join_group(args) if args.nproc > 1 else True
    np.random.seed(args.seed)
    try:
        _fetch_if_asked(args)
        device = ndl.device(args.device) if args.device else ndl.default_device()
        task = build_task(args, device)
    except (MissingDataError, DataFormatError, BackendUnavailableError, FileNotFoundError) as exc:
        return _fail(str(exc))
    except OSError as exc:  # a failed --download (network, HTTP, checksum)
        return _fail(f"--download of {args.dataset} failed: {exc}")

    model = task.model
    opt = _make_optimizer(args, model.parameters())
    schedule = _make_schedule(args, opt)
    if is_main:
        os.makedirs(args.out, exist_ok=True)
    ckpt_path = os.path.join(args.out, "checkpoint.npz")
    start_epoch, history, steps = 0, [], []
    if args.resume:
        if not os.path.isfile(ckpt_path):
            return _fail(f"--resume: no checkpoint at {ckpt_path}")
        try:
            start_epoch, history, steps = _load_checkpoint(ckpt_path, model, opt, schedule, args)
        except (NeedleError, ValueError, KeyError, TypeError, IndexError) as exc:
            return _fail(f"--resume: cannot use {ckpt_path}: {exc}")
        print(f"resumed from {ckpt_path} after epoch {start_epoch}")

    n_params = sum(int(np.prod(p.shape)) for p in model.parameters())
    # the lr the next step uses: after --resume the schedule has moved it from --lr
    lr_now = f"lr {opt.lr:g}" + (f" (schedule {args.schedule} from --lr {args.lr:g}, resumed at epoch "
                                 f"{start_epoch + 1})" if start_epoch else "")
    print(f"needle train: {args.model} ({n_params:,} parameters) on {args.dataset} from {args.data_dir}, "
          f"device {device}, {args.optimizer} {lr_now} wd {args.weight_decay}, batch {args.batch_size}"
          + (f" ({args.nproc} processes x {args.batch_size // args.nproc})" if args.nproc > 1 else ""))

    train_step = _jit_step(task, opt) if args.jit else None
    for epoch in range(start_epoch + 1, args.epochs + 1):
        progress["epoch"] = epoch
        task.set_epoch(epoch)
        train_stats = _run_epoch(task, args, opt, f"epoch {epoch}/{args.epochs} train", steps, epoch,
                                 train_step)
        if args.nproc > 1:
            train_stats = _reduce_stats(train_stats)
        if is_main:  # rank 0 evaluates on the whole test set; the others go on
            test_stats = _run_epoch(task, args, None, f"epoch {epoch}/{args.epochs} test")
        else:
            test_stats = {"loss": float("nan"), "acc": float("nan"), "time_s": 0.0, "samples_per_s": 0.0}
        record = {
            "epoch": epoch,
            "lr": opt.lr,
            "train_loss": train_stats["loss"], "train_acc": train_stats["acc"],
            "test_loss": test_stats["loss"], "test_acc": test_stats["acc"],
            "train_time_s": train_stats["time_s"], "test_time_s": test_stats["time_s"],
            "train_samples_per_s": train_stats["samples_per_s"],
            "test_samples_per_s": test_stats["samples_per_s"],
        }
        history.append(record)
        print(f"epoch {epoch}/{args.epochs}: train loss {record['train_loss']:.4f} acc {record['train_acc']:.4f}"
              f" | test loss {record['test_loss']:.4f} acc {record['test_acc']:.4f}"
              f" | {train_stats['time_s']:.1f} s, {train_stats['samples_per_s']:.0f} samples/s", flush=True)
        # the compiled step reads group["lr"] before every replay, so the
        # schedule stays outside it, stepped per epoch as without --jit
        if schedule is not None:
            schedule.step()
        if is_main:
            _save_checkpoint(ckpt_path, model, opt, schedule, epoch, history, args, steps)
            _write_outputs(args, device, n_params, task, history, steps, train_step)
        progress["saved"] = epoch

    if not is_main:
        return 0
    ndl.save(model, os.path.join(args.out, "model.npz"))
    _write_outputs(args, device, n_params, task, history, steps, train_step)
    if train_step is not None:
        print(f"jit: {_jit_summary(train_step)}")
    if not plot_curves(history, os.path.join(args.out, "curves.png"), steps):
        print("note: matplotlib is not installed; curves.png skipped (pip install 'needle-dl[plots]')")
    if history:
        last = history[-1]
        print(f"final train accuracy {last['train_acc']:.4f}, test accuracy {last['test_acc']:.4f}")
    print(f"wrote {args.out}/metrics.json, curves.png, model.npz, checkpoint.npz")
    return 0


def _jit_step(task, opt):
    """The --jit training step of ``task``: its three step parts through needle.jit."""
    from .training import JitTrainStep

    def fallback(exc):
        # the run goes on; that batch shape trains eagerly
        print(f"needle train: --jit: a batch shape's step could not be captured and trains eagerly: "
              f"{exc}", file=sys.stderr, flush=True)

    return JitTrainStep(task.step_inputs, task.step_outputs, task.step_result, opt, on_fallback=fallback)


def _jit_summary(train_step) -> str:
    s = train_step.stats
    plans = train_step.plan_info()
    text = f"{s['replays']} replayed steps, {s['captures']} captures, {s['eager']} eager steps"
    if train_step.fallback is not None:
        text += " (a batch shape eager after a failed capture)"
    if plans:
        text += " (" + "; ".join(f"{p['calls']} kernel calls, {p['arena_bytes'] / 2**20:.1f} MiB arena, "
                                 f"{'native' if p['native'] else 'Python'} replay" for p in plans) + ")"
    return text


def _write_outputs(args, device, n_params, task, history, steps=(), train_step=None):
    metrics = {
        "args": vars(args),
        "jit": bool(getattr(args, "jit", False)),
        "device": str(device),
        "num_parameters": n_params,
        "data": task.info,
        "epochs": history,
        "steps": list(steps),
        "final": ({"train_acc": history[-1]["train_acc"], "test_acc": history[-1]["test_acc"]} if history else None),
    }
    if train_step is not None:
        fallback = None if train_step.fallback is None else str(train_step.fallback)
        metrics["jit_stats"] = dict(train_step.stats, plans=train_step.plan_info(), fallback=fallback)
    _write_json(os.path.join(args.out, "metrics.json"), metrics)
