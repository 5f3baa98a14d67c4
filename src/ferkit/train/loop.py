"""The training loop, top to bottom: settings checked -> data -> model -> optimiser -> epochs -> checkpoints.

Under torchrun every process runs this same loop on its share of each batch (`ferkit.train.distributed`
holds the process-group plumbing); rank 0 alone prints and writes the run folder.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ferkit.data import UNSPLIT, FaceSet, load_dataset
from ferkit.data.ferplus import discount_neutral
from ferkit.errors import ConfigError, DataError, FerkitError
from ferkit.models import create_model, list_models, save_architecture
from ferkit.train.augment import augment, mix_batch
from ferkit.train.checkpoint import load_init_weights, load_training_state, save_training_state
from ferkit.train.config import TrainConfig
from ferkit.train.corrupt import corrupt_faces
from ferkit.train.curves import plot_curves
from ferkit.train.device import autocast_for, pick_device, uses_bf16
from ferkit.train.distill import teacher_file
from ferkit.train.distributed import BatchShards, World
from ferkit.train.losses import joint_loss, soft_cross_entropy
from ferkit.train.optim import build_optimizer, build_scheduler, is_per_step
from ferkit.train.provenance import session_entry
from ferkit.train.run import Head, RunFolder, head_sizes, joint_heads, plain_heads, weights_file
from ferkit.train.scoring import batch_input, head_accuracies, keep_if_best, predict_logits, score_average
from ferkit.train.swa import WeightAverage, bn_sample


# ---------------------------------------------------------------------------- before anything is written
def preflight(cfg: TrainConfig, world: World | None = None) -> torch.device:
    """Every check that needs no data: the settings, the architecture, the device, the weights files named.
    A mistake here leaves nothing behind (no run folder). Returns the device this process trains on."""
    world = world or World()
    cfg.validate()
    world.check(cfg)
    if cfg.model not in list_models():
        raise ConfigError(f"--model: unknown model {cfg.model!r}; registered: {', '.join(list_models())}")
    if cfg.init and not weights_file(cfg.init).is_file():
        raise DataError(f"--init: no weights at {weights_file(cfg.init)}")
    for source in cfg.teachers:
        if not teacher_file(source).is_file():
            raise DataError(f"--teacher: no weights at {teacher_file(source)}")
    return world.rank_device(cfg.device, pick_device(cfg.device))


def split_data(cfg: TrainConfig) -> tuple[FaceSet, FaceSet]:
    faces = load_dataset(cfg.data, ferplus=cfg.ferplus, classes=tuple(cfg.classes) if cfg.classes else None)
    names = faces.split_names()
    if names == [UNSPLIT]:  # an unsplit folder tree: hold out a fixed 10% for validation
        rng = np.random.default_rng(12345)
        val_mask = rng.random(len(faces)) < 0.1
        train, val = faces.subset(~val_mask), faces.subset(val_mask)
    else:
        train, val = faces.split(cfg.train_split), faces.split(cfg.val_split)
    if cfg.limit:
        keep = np.sort(np.random.default_rng(cfg.seed).permutation(len(train))[: cfg.limit])
        train = train.subset(keep)
    if len(train) == 0 or len(val) == 0:
        raise DataError("training or validation split is empty")
    return train, val


def targets(faces: FaceSet) -> torch.Tensor:
    """Soft targets (N, C): the FER+ vote distribution when present, else one-hot labels."""
    if faces.soft_labels is not None:
        return torch.from_numpy(faces.soft_labels).float()
    return F.one_hot(torch.from_numpy(faces.labels), faces.num_classes).float()


def early_stopped(cfg: TrainConfig, state: dict) -> bool:
    return bool(cfg.early_stop) and state["epoch"] > 0 and state["epoch"] - state["best_epoch"] >= cfg.early_stop


def epoch_notes(heads: list[Head], accs: list[float], state: dict) -> str:
    """The other heads' part of an epoch line: ' | FER+ head acc 0.8312 (best 0.8350)'."""
    return "".join(f" | {h.label} head acc {acc:.4f} (best {state[f'{h.state_prefix}best_acc']:.4f})"
                   for h, acc in zip(heads, accs) if not h.primary)


# ---------------------------------------------------------------------------- the loop
def train(cfg: TrainConfig, resume: bool = False, progress: bool = True, stop_after: int | None = None,
          argv: list[str] | None = None, recipe: dict | None = None, changes: list[str] | None = None) -> dict:
    """Train per `cfg`, writing everything into the run folder cfg.out; returns the final state dict.

    resume: continue from cfg.out/last.safetensors exactly where it left off.
    stop_after: end the process's work after this many epochs (used to test resuming).
    argv, recipe: the command line (and --config recipe) that started the run, kept for its model card;
    changes: the settings a resume changed (with argv, noted beside it).
    Under torchrun, one process of several: --batch-size is the global batch, shared out over the processes.
    """
    world = World.from_env()
    try:
        device = preflight(cfg, world)
    except FerkitError:
        world.quiet_on_fault()  # every rank finds the same fault: one line per node, not one per process
        raise
    with world.process_group(device):
        return train_replica(cfg, world, device, resume, progress and world.main, stop_after, argv, recipe, changes)


def train_replica(cfg: TrainConfig, world: World, device: torch.device, resume: bool, progress: bool,
                  stop_after: int | None, argv: list[str] | None, recipe: dict | None,
                  changes: list[str] | None) -> dict:
    """`train` in this process: the whole run, or this rank's part of it."""
    run = RunFolder(cfg.out)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    autocast = autocast_for(device, cfg.precision)

    with world.rank_zero_first():  # rank 0 parses the data into the cache; the others read it from there
        train_set, val_set = split_data(cfg)
    X, Y = train_set.images, targets(train_set)
    if cfg.ferplus and cfg.ferplus_neutral != 1.0:
        Y = torch.from_numpy(discount_neutral(Y.numpy(), cfg.ferplus_neutral))
    n, num_classes = len(X), train_set.num_classes
    class_weights = None
    if cfg.class_weights:
        freq = Y.sum(0).clamp(min=1)
        class_weights = (freq.sum() / (num_classes * freq)).to(device)
    heads, aux_val_labels = plain_heads(train_set.class_names), None
    if cfg.aux_ferplus:  # a joint run: a second head learns FER+'s votes for the same faces
        from ferkit.data.ferplus import ferplus_targets

        aux_soft, aux_labels = ferplus_targets(np.concatenate([train_set.ids, val_set.ids]), cfg.aux_ferplus)
        aux_train, aux_val_labels = aux_soft[:n], aux_labels[n:]
        if cfg.ferplus_neutral != 1.0:
            aux_train = discount_neutral(aux_train, cfg.ferplus_neutral)
        Y = torch.cat([Y, torch.from_numpy(aux_train)], 1)
        heads = joint_heads(train_set.class_names)
    online = None
    if cfg.teacher_online:  # the teachers answer on each batch as the student sees it (below)
        from ferkit.train.distill import OnlineTeachers, blend_targets

        online = OnlineTeachers(cfg.teachers, heads)
    elif cfg.teachers:  # knowledge distillation: blend the teachers' probabilities into the targets
        from ferkit.train.distill import blend_targets, teacher_probabilities

        def fresh_model():
            return create_model(cfg.model, sum(head_sizes(heads)), **cfg.model_kwargs)

        with world.rank_zero_first():  # rank 0 computes and caches them in the run folder; the others read them
            T = teacher_probabilities(cfg.teachers, fresh_model, X, heads, device, autocast, cfg.channels_last, run)
        Y = blend_targets(Y, T, cfg.distill_weight, head_sizes(heads))
    Y = Y.to(device)

    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    model = create_model(cfg.model, sum(head_sizes(heads)), **cfg.model_kwargs).to(device)
    if cfg.init:
        load_init_weights(model, weights_file(cfg.init))
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model = world.prepare(model, cfg.sync_bn)
    shards = BatchShards(n, cfg.batch_size, world)
    steps = len(shards)
    optimizer = build_optimizer(cfg, model)
    scheduler = build_scheduler(cfg, optimizer, steps)
    per_step = is_per_step(scheduler)

    resuming = world.agree(resume and run.last.exists())
    if world.main:  # rank 0 alone writes the run folder; the other ranks wait at the barrier
        run.create()
        run.record_command(argv, recipe, changes, fresh=not resuming)
        cfg.save(run.config)
        save_architecture(model, run.architecture, classes=list(train_set.class_names),
                          **({"heads": [h.as_dict() for h in heads]} if len(heads) > 1 else {}))
        run.clean_stale()
    world.barrier()
    state = {"epoch": 0, "best_acc": -1.0, "best_epoch": 0, "history": [], "wall_seconds": 0.0}
    if resuming:  # every rank continues from the same checkpoint
        state = load_training_state(run.last, model, optimizer, scheduler, gen)
        world.say(f"resumed {run.path} after epoch {state['epoch']}")
    swa = None
    if cfg.swa_start:
        swa = WeightAverage.resume(run.last, cfg.swa_start, state["epoch"])
        bn_faces = X[bn_sample(n, cfg.seed)]
    if world.main:
        run.add_session({**session_entry(device, "bf16" if uses_bf16(device, cfg.precision) else "fp32",
                                         state["epoch"]), **world.describe()})
    net = world.wrap(model)  # what trains: the model, or its DistributedDataParallel replica

    done_here = 0
    val_targets = targets(val_set)
    while state["epoch"] < cfg.epochs and not early_stopped(cfg, state):
        epoch = state["epoch"] + 1
        t0 = time.time()
        model.train()
        perm = torch.randperm(n, generator=gen)  # the same on every rank
        aug_gen = world.epoch_generator(gen, cfg.seed, epoch)  # one process: gen itself
        tot_loss, tot_correct, seen = 0.0, 0, 0
        bar = tqdm(range(steps), desc=f"epoch {epoch}/{cfg.epochs}", disable=not progress, leave=True,
                   mininterval=0.5 if sys.stderr.isatty() else 30, file=sys.stderr)
        for step in bar:
            idx, share = shards.batch(perm, step)  # this rank's faces of the global batch
            faces = X[idx.numpy()]
            if cfg.corrupt > 0:  # camera faults, drawn from this epoch's generator
                rng = np.random.default_rng(int(torch.randint(2**62, (1,), generator=aug_gen)))
                faces = corrupt_faces(faces, rng, cfg.corrupt)
            x = batch_input(faces, device, cfg.channels_last)
            y = Y[idx.to(device)]
            x = augment(x, aug_gen, cfg)
            x, y_mixed = mix_batch(x, y, aug_gen, cfg.mixup, cfg.cutmix, cfg.mix_prob)
            if online is not None:
                y_mixed = blend_targets(y_mixed, online(x), cfg.distill_weight, head_sizes(heads))
            with autocast():
                logits = net(x)
            loss = joint_loss(logits, y_mixed, heads, cfg.label_smoothing, class_weights, cfg.aux_weight)
            optimizer.zero_grad(set_to_none=True)
            (loss * share).backward()  # gradients averaged over the ranks: the global batch's mean loss
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            if per_step:
                scheduler.step()
            tot_loss += loss.item() * len(idx)
            tot_correct += int((logits[:, :num_classes].argmax(1) == y[:, :num_classes].argmax(1)).sum())
            seen += len(idx)
            bar.set_postfix(loss=f"{tot_loss / seen:.4f}", acc=f"{tot_correct / seen:.4f}", refresh=False)
        bar.close()
        tot_loss, tot_correct, seen = world.sum(tot_loss, tot_correct, seen)

        world.sync_buffers(model)  # each rank scores its share of the validation faces with rank 0's net
        val_logp = world.gather_rows(predict_logits(model, world.shard(val_set.images), device, autocast,
                                                    cfg.channels_last, heads=heads), len(val_set))
        val_loss = float(soft_cross_entropy(val_logp[:, :num_classes], val_targets, 0.0, None))
        accs = head_accuracies(val_logp, heads, val_targets, aux_val_labels)
        val_acc = accs[0]
        if scheduler is not None and not per_step:
            scheduler.step(val_acc)
        seconds = time.time() - t0
        state["wall_seconds"] += seconds
        state["history"].append({
            "epoch": epoch, "train_loss": round(tot_loss / seen, 5), "train_acc": round(tot_correct / seen, 5),
            "val_loss": round(val_loss, 5), "val_acc": round(val_acc, 5),
            "lr": optimizer.param_groups[0]["lr"], "seconds": round(seconds, 1),
        })
        state["epoch"] = epoch
        for head, acc in zip(heads, accs):  # each head keeps its own best checkpoint
            if not head.primary:
                state["history"][-1][head.val_column] = round(acc, 5)
            keep_if_best(head, acc, epoch, state, model, run)
        notes = epoch_notes(heads, accs, state)
        if swa is not None and epoch >= swa.first_epoch:
            t_swa = time.time()
            swa.update(model)
            notes += score_average(swa, model, bn_faces, val_set.images, val_targets, aux_val_labels, heads, cfg,
                                   device, autocast, state, epoch, run)
            extra_seconds = time.time() - t_swa
            seconds += extra_seconds
            state["wall_seconds"] += extra_seconds
            state["history"][-1]["seconds"] = round(seconds, 1)
        if world.main:  # every rank holds the same state; rank 0 writes it while the others wait
            save_training_state(run.last, model, optimizer, scheduler, gen, state,
                                extra=swa.checkpoint_tensors() if swa is not None else None)
            run.write_history(state["history"])
            plot_curves(state["history"], run.curves, heads)
        world.barrier()
        world.say(f"epoch {epoch}: train loss {tot_loss / seen:.4f} acc {tot_correct / seen:.4f} | "
                  f"{cfg.val_split} loss {val_loss:.4f} acc {val_acc:.4f} | best {state['best_acc']:.4f} "
                  f"(epoch {state['best_epoch']}){notes} | {seconds:.0f}s")
        done_here += 1
        if early_stopped(cfg, state):
            world.say(f"early stop: no better {cfg.val_split} accuracy for {cfg.early_stop} epochs")
            break
        if stop_after is not None and done_here >= stop_after:
            break
    return state
