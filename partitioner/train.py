"""The one training driver: reference pre-training, channel remapping, joint training.

State lives in a run folder: `checkpoint.pt` (written after every epoch and stage, so a
stopped run resumes where it was) and `metrics.jsonl` (one line per epoch).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch import nn
from tqdm import tqdm

from agilenn.datasets import Dataset, load_dataset
from partitioner.checkpoint import BUNDLE_CHECKPOINT, load_any_checkpoint, load_run_checkpoint
from partitioner.config import CONFIG_SUFFIXES, Heads, Joint, Optimiser, PartitionConfig, load_config
from partitioner.data import augment, batches, to_tensors
from partitioner.importance import (
    channel_importance,
    disorder_loss,
    integrated_gradients,
    local_share,
    skewness,
    skewness_loss,
)
from partitioner.model import AgileNN
from partitioner.quantizer import hard_entropy_bits, kmeans_centroids
from partitioner.remap import permute_input_channels, permute_output_channels, remap_order

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"


@dataclass
class TrainResult:
    model: AgileNN
    reference_extractor: nn.Module  # the extractor as pre-trained, before joint training changed it
    dataset: Dataset
    run_dir: Path


def sgd_cosine(params, spec: Optimiser, batches_per_epoch: int
               ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """SGD with momentum and a cosine learning rate over all of `spec`'s steps."""
    opt = torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)
    return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(spec.epochs * batches_per_epoch, 1))


def supervised_epoch(forward, batches, optimiser, scheduler) -> tuple[float, int, int]:
    """One epoch of plain cross-entropy over (x, y) batches: (summed loss, correct, seen)."""
    loss_sum, correct, seen = 0.0, 0, 0
    for x, y in batches:
        logits = forward(x)
        loss = F.cross_entropy(logits, y)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        scheduler.step()
        seen += len(y)
        correct += int((logits.argmax(1) == y).sum())
        loss_sum += float(loss.detach()) * len(y)
    return loss_sum, correct, seen


class Trainer:
    def __init__(self, config: PartitionConfig, run_dir: str | Path, dataset: Dataset | None = None,
                 progress: bool = True, *, sources: tuple[Path, ...] = ()) -> None:
        self.config = config
        self._sources = sources  # config files being trained as fine_tune_from sources, outermost first
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.progress = progress
        torch.manual_seed(config.seed)
        torch.set_num_threads(config.threads)
        self.dataset = dataset if dataset is not None else load_dataset(config.dataset)
        self.train_x, self.train_y = to_tensors(self.dataset.train, config.mean, config.std, config.train_limit)
        self.test_x, self.test_y = to_tensors(self.dataset.test, config.mean, config.std, config.test_limit)
        self.background = -config.mean / config.std
        self.model = AgileNN(config, self.dataset.input_shape, self.dataset.num_classes)
        self.reference_extractor: nn.Module | None = None
        self.generator = torch.Generator().manual_seed(config.seed)
        self.stage, self.epoch = "reference", 0
        self.polished = False
        self.heads_trained = False
        self.opt_state: dict[str, Any] | None = None
        self._generator_before_joint: torch.Tensor | None = None  # to refit the levels of a changed joint stage
        self._load()
        if self.stage == "reference" and self.epoch == 0 and config.fine_tune_from is not None:
            self._start_from(self._source_split(Path(config.fine_tune_from)))

    # ---- state -------------------------------------------------------------------------
    def _load(self) -> None:
        path = self.run_dir / CHECKPOINT
        if not path.exists():
            return
        state = load_run_checkpoint(path)
        polish_started = state["stage"] in ("polish", "heads") or state.get("polished", False)
        heads_started = state["stage"] == "heads" or state.get("heads_trained", False)
        # a from-scratch run's joint settings (quantizer, heads, losses) may change until joint training
        # takes its first step: the reference stage and the remap do not depend on them
        joint_started = self.config.fine_tune_from is not None or _joint_started(state)
        # through the schema, so that settings added since (at their defaults) do not count as changes
        try:
            saved = PartitionConfig.model_validate(state["config"]).model_dump(mode="json")
        except ValidationError as exc:
            raise ValueError(f"{path}: the config saved with this checkpoint no longer validates; use a new run "
                             f"folder or delete it ({exc.error_count()} problems, first: {exc.errors()[0]['msg']})"
                             ) from None
        if (_training_part(saved, joint_started, polish_started, heads_started)
                != _training_part(self.config.model_dump(mode="json"), joint_started, polish_started, heads_started)):
            raise ValueError(f"{path} was written by a different config; use a new run folder or delete it")
        if joint_started:
            self.model.load_state_dict(state["model"])
        else:  # this config's heads and quantizer, as a fresh run would have them
            self.model.load_state_dict({k: v for k, v in state["model"].items()
                                        if k.startswith(("extractor.", "evaluator."))}, strict=False)
        if state["reference_extractor"] is not None:
            self.reference_extractor = copy.deepcopy(self.model.extractor)
            self.reference_extractor.load_state_dict(state["reference_extractor"])
        self.stage, self.epoch, self.opt_state = state["stage"], state["epoch"], state["optimiser"]
        self.polished = state.get("polished", False)
        self.heads_trained = state.get("heads_trained", False)
        if self.stage == "done" and self.config.polish is not None and not self.polished:
            self.stage, self.epoch, self.opt_state = "polish", 0, None  # a polish stage added after training
        elif self.stage == "done" and self.config.heads is not None and not self.heads_trained:
            self.stage, self.epoch, self.opt_state = "heads", 0, None  # a heads stage added after training
        self.generator.set_state(state["generator"])
        log.info("resuming %s at stage %s, epoch %d", self.run_dir, self.stage, self.epoch)
        if not joint_started and self.stage == "joint":
            if state.get("generator_before_joint") is not None:
                self.generator.set_state(state["generator_before_joint"])
            self._prepare_joint()

    def _source_split(self, source: Path) -> Path:
        """Where the split to fine-tune lies. A config file names the split it trains: its run folder beside
        this one (runs/<its name> by default), trained there first (or resumed) unless the folder holds only
        the split's exported checkpoint."""
        if source.suffix not in CONFIG_SUFFIXES:
            return source
        if source.resolve() in self._sources:
            chain = " -> ".join(str(p) for p in (*self._sources, source.resolve()))
            raise ValueError(f"fine_tune_from: {source} loops back to itself ({chain})")
        base = load_config(source)
        run = self.run_dir.parent / base.name
        if (run / CHECKPOINT).exists() or not (run / BUNDLE_CHECKPOINT).exists():
            log.info("fine_tune_from: training %s in %s first", source, run)
            threads = torch.get_num_threads()
            with torch.random.fork_rng():  # this run draws the same numbers whether the base was trained now or not
                Trainer(base, run, self.dataset if base.dataset == self.config.dataset else None, self.progress,
                        sources=(*self._sources, source.resolve())).run()
            torch.set_num_threads(threads)
        return run

    def _start_from(self, source: Path) -> None:
        """Take a trained split's weights; what this config reshapes (the quantizer for another level
        count, a predictor's first layer for another k) starts fresh, then the joint stages run."""
        path = source
        if source.is_dir():
            path = next((source / name for name in (CHECKPOINT, BUNDLE_CHECKPOINT) if (source / name).exists()),
                        source / CHECKPOINT)
        if not path.exists():
            raise FileNotFoundError(f"fine_tune_from: no checkpoint at {path}; train or export that split first")
        state = load_any_checkpoint(path)
        if state.get("stage", "done") != "done":
            raise ValueError(f"fine_tune_from: {path} is still at stage {state['stage']!r}; finish that run first")
        theirs = state["config"]
        for key in ("dataset", "mean", "std"):
            if theirs[key] != getattr(self.config, key):
                raise ValueError(f"fine_tune_from: {path} was trained with {key}={theirs[key]!r}, "
                                 f"this config has {getattr(self.config, key)!r}")
        own = self.model.state_dict()
        taken = {k: v for k, v in state["model"].items() if k in own and own[k].shape == v.shape}
        resized = {}
        for name in set(own) - set(taken):
            if name in state["model"]:
                carried = _move_input_channels(name, own[name], state["model"][name], theirs["local_channels"],
                                               self.config.local_channels, self.model.feature_shape[0])
                if carried is not None:
                    resized[name] = carried
        taken.update(resized)
        if self.config.quantizer.init_centroids is not None:
            taken.pop("quantizer.gap_logits", None)  # the config's centroids, not the source's
        fresh = sorted(set(own) - set(taken))
        kept_whole = [k for k in fresh if k.startswith(("extractor.", "evaluator."))]
        if kept_whole:
            raise ValueError(f"fine_tune_from: {path} has another extractor or evaluator ({kept_whole[0]} differs); "
                             "fine-tuning keeps both")
        self.model.load_state_dict(taken, strict=False)
        self.reference_extractor = copy.deepcopy(self.model.extractor)
        self.reference_extractor.load_state_dict(state["reference_extractor"])
        q = self.config.quantizer
        if q.init_centroids is None and ("quantizer.gap_logits" in fresh or not q.learn_centroids):
            self._fit_centroids()  # new or fixed levels start where the features are
        self.stage, self.epoch = "joint", 0
        self._log({"stage": "fine-tune-start", "source": str(path), "fresh_parameters": fresh,
                   "resized_parameters": sorted(resized),
                   "centroids": [round(c, 4) for c in self.model.quantizer.centroids().tolist()]})
        self._save()

    @torch.no_grad()
    def _fit_centroids(self, samples: int = 200_000) -> None:
        """Quantizer centroids by 1-D k-means over the offloaded feature values of training images."""
        self.model.eval()
        k = self.config.local_channels
        values = torch.cat([self.model.extractor(x)[:, k:].flatten() for x, _ in
                            batches(self.train_x[:5000], self.train_y[:5000], 500)])
        pick = torch.randperm(len(values), generator=self.generator)[:samples]
        self.model.quantizer.set_centroids(kmeans_centroids(values[pick], self.config.quantizer.levels,
                                                            self.config.seed))

    def _prepare_joint(self) -> None:
        """Before the first joint step of a fresh run: levels where the offloaded features are."""
        self._generator_before_joint = self.generator.get_state()
        if self.config.quantizer.init_centroids is None:
            self._fit_centroids()
        if self.config.joint_training.remote_init == "reference":
            self.model.remote.load_state_dict(
                offloaded_head(self.model.evaluator.state_dict(), self.model.remote.state_dict(),
                               self.config.local_channels, self.model.feature_shape[0]))

    def _save(self, optimiser=None, scheduler=None) -> None:
        state = {
            "config": self.config.model_dump(mode="json"),
            "model": self.model.state_dict(),
            "reference_extractor": None if self.reference_extractor is None else self.reference_extractor.state_dict(),
            "stage": self.stage,
            "epoch": self.epoch,
            "polished": self.polished,
            "heads_trained": self.heads_trained,
            "optimiser": None if optimiser is None else {"opt": optimiser.state_dict(), "sched": scheduler.state_dict()},
            "generator": self.generator.get_state(),
            "generator_before_joint": self._generator_before_joint,
        }
        tmp = self.run_dir / (CHECKPOINT + ".tmp")
        torch.save(state, tmp)
        tmp.replace(self.run_dir / CHECKPOINT)

    def _log(self, record: dict[str, Any]) -> None:
        record = {"time": round(time.time(), 1), **record}
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        log.info("%s", record)
        if self.progress:
            tqdm.write(json.dumps(record))

    def _batches(self):
        aug = self.config.augment
        for x, y in batches(self.train_x, self.train_y, self._batch_size, self.generator):
            yield augment(x, aug.max_shift_px, aug.horizontal_flip, self.generator, self.background), y

    # ---- stages ------------------------------------------------------------------------
    def run(self) -> TrainResult:
        started = time.time()
        if self.stage == "reference":
            self._train_reference()
        if self.stage == "remap":
            self._remap()
        if self.stage == "joint":
            self._train_joint(self.config.joint_training, "joint")
            self.stage = "polish" if self.config.polish is not None else self._after_polish()
            self._save()
        if self.stage == "polish":
            self._train_joint(self.config.polish, "polish")
            self.stage, self.polished = self._after_polish(), True
            self._save()
        if self.stage == "heads":
            assert self.config.heads is not None
            self._train_heads(self.config.heads)
            self.stage, self.heads_trained = "done", True
            self._save()
        self._log({"stage": "done", "seconds_this_run": round(time.time() - started, 1)})
        assert self.reference_extractor is not None
        return TrainResult(self.model, self.reference_extractor, self.dataset, self.run_dir)

    def _resume_optimiser(self, params, spec: Optimiser):
        optimiser, scheduler = sgd_cosine(params, spec, math.ceil(len(self.train_y) / spec.batch_size))
        if self.opt_state is not None:
            optimiser.load_state_dict(self.opt_state["opt"])
            scheduler.load_state_dict(self.opt_state["sched"])
            self.opt_state = None
        return optimiser, scheduler

    def _train_reference(self) -> None:
        spec = self.config.reference_training
        self._batch_size = spec.batch_size
        m = self.model
        params = list(m.extractor.parameters()) + list(m.evaluator.parameters())
        optimiser, scheduler = self._resume_optimiser(params, spec)
        while self.epoch < spec.epochs:
            m.train()
            bar = tqdm(self._batches(), total=math.ceil(len(self.train_y) / spec.batch_size),
                       desc=f"reference {self.epoch + 1}/{spec.epochs}", disable=not self.progress, leave=False)
            loss_sum, correct, seen = supervised_epoch(m.reference_logits, bar, optimiser, scheduler)
            self.epoch += 1
            self._log({"stage": "reference", "epoch": self.epoch, "train_loss": loss_sum / seen,
                       "train_accuracy": correct / seen, "test_accuracy": self.evaluate_reference()})
            self._save(optimiser, scheduler)
        self.reference_extractor = copy.deepcopy(m.extractor)
        self.stage, self.epoch = "remap", 0
        self._save()

    def _remap(self) -> None:
        m = self.model
        m.eval()
        count = min(self.config.remap.samples, len(self.train_y))
        importance = []
        for x, y in batches(self.train_x[:count], self.train_y[:count], 500):
            features = m.extractor(x).detach()
            importance.append(channel_importance(integrated_gradients(m.evaluator, features, y, self.config.importance.steps)))
        per_channel = torch.cat(importance)
        k = self.config.local_channels
        before = float(local_share(per_channel, k).mean())
        order = remap_order(per_channel, k)
        permute_output_channels(m.extractor, order)
        permute_input_channels(m.evaluator, order)
        self.reference_extractor = copy.deepcopy(m.extractor)
        after = float(local_share(per_channel[:, order], k).mean())
        self._prepare_joint()
        self._log({"stage": "remap", "order": order.tolist(), "skewness_before": before, "skewness_after": after,
                   "test_accuracy_reference": self.evaluate_reference(),
                   "centroids": [round(c, 4) for c in m.quantizer.centroids().tolist()]})
        self.stage, self.epoch = "joint", 0
        self._save()

    def _train_joint(self, spec: Joint, stage: str) -> None:
        self._batch_size = spec.batch_size
        m = self.model
        k = self.config.local_channels
        for p in m.evaluator.parameters():
            p.requires_grad_(False)
        trained = [(name, p) for name, p in m.named_parameters() if not name.startswith("evaluator.") and p.requires_grad]
        # weight decay would pull the level gaps towards even spacing, which no loss asked for
        params = [{"params": [p for name, p in trained if not name.startswith("quantizer.")]},
                  {"params": [p for name, p in trained if name.startswith("quantizer.")], "weight_decay": 0.0}]
        optimiser, scheduler = self._resume_optimiser(params, spec)
        teacher = self._teacher() if spec.distill_weight > 0 else None
        while self.epoch < spec.epochs:
            m.train()
            m.evaluator.eval()  # frozen, BN statistics included
            totals = {"ce": 0.0, "skewness": 0.0, "disorder": 0.0, "rate_bits": 0.0, "correct": 0,
                      "correct_local": 0}
            seen = 0
            bar = tqdm(self._batches(), total=math.ceil(len(self.train_y) / spec.batch_size),
                       desc=f"{stage} {self.epoch + 1}/{spec.epochs}", disable=not self.progress, leave=False)
            for x, y in bar:
                features = m.extractor(x)
                importance = integrated_gradients(m.evaluator, features, y, self.config.importance.steps,
                                                  create_graph=True)
                out = m.split(features)
                ce = F.cross_entropy(out.mixed_logits, y)
                aux = spec.local_loss_weight * F.cross_entropy(out.local_logits, y) \
                    + spec.remote_loss_weight * F.cross_entropy(out.remote_logits, y)
                if teacher is not None:
                    aux = aux + spec.distill_weight * distillation_loss(out.mixed_logits, teacher(x),
                                                                        spec.distill_temperature)
                skew = skewness_loss(importance, k, spec.rho)
                disorder = disorder_loss(importance, k)
                loss = spec.lam * (ce + aux) + (1 - spec.lam) * (skew + disorder)
                if spec.rate_weight:
                    loss = loss + spec.rate_weight * m.quantizer.rate_bits(features[:, k:])
                if spec.level_share_weight:
                    loss = loss + spec.level_share_weight * m.quantizer.level_shortfall(
                        features[:, k:], self.config.quantizer.min_level_share)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                scheduler.step()
                n = len(y)
                seen += n
                totals["ce"] += float(ce.detach()) * n
                totals["skewness"] += float(skewness(importance.detach(), k).sum())
                totals["disorder"] += float(disorder.detach()) * n
                totals["rate_bits"] += hard_entropy_bits(out.indices, m.quantizer.levels) * n
                totals["correct"] += int((out.mixed_logits.argmax(1) == y).sum())
                totals["correct_local"] += int((out.local_logits.argmax(1) == y).sum())
                bar.set_postfix(acc=totals["correct"] / seen, skew=totals["skewness"] / seen)
            self._finish_epoch(stage, totals, seen, optimiser, scheduler,
                               train_skewness=totals["skewness"] / seen, train_disorder=totals["disorder"] / seen,
                               train_bits_per_symbol=totals["rate_bits"] / seen)
        self.epoch = 0

    def _finish_epoch(self, stage: str, totals: dict[str, float], seen: int, optimiser, scheduler,
                      **figures: float) -> None:
        """Count a joint or heads epoch, log its training figures with the test checks, save the run."""
        self.epoch += 1
        record = {"stage": stage, "epoch": self.epoch, "train_ce": totals["ce"] / seen, **figures,
                  "train_accuracy": totals["correct"] / seen, "train_accuracy_local": totals["correct_local"] / seen,
                  "alpha_local": self.model.alpha().item()}
        record.update(self.evaluate_split())
        self._log(record)
        self._save(optimiser, scheduler)

    def _after_polish(self) -> str:
        return "heads" if self.config.heads is not None else "done"

    def _train_heads(self, spec: Heads) -> None:
        """Only the local and remote predictors and the mixing weight learn: the extractor (so the payload and
        the skewness) and the quantizer stay as the joint stages left them."""
        self._batch_size = spec.batch_size
        m = self.model
        optimiser, scheduler = self._resume_optimiser([*m.local.parameters(), *m.remote.parameters(),
                                                       m.mixing_logit], spec)
        teacher = self._teacher() if spec.distill_weight > 0 else None
        while self.epoch < spec.epochs:
            m.train()
            m.extractor.eval()
            m.evaluator.eval()
            totals = {"ce": 0.0, "correct": 0, "correct_local": 0}
            seen = 0
            bar = tqdm(self._batches(), total=math.ceil(len(self.train_y) / spec.batch_size),
                       desc=f"heads {self.epoch + 1}/{spec.epochs}", disable=not self.progress, leave=False)
            for x, y in bar:
                with torch.no_grad():
                    features = m.extractor(x)
                out = m.split(features)
                ce = F.cross_entropy(out.mixed_logits, y)
                loss = ce + spec.local_loss_weight * F.cross_entropy(out.local_logits, y) \
                    + spec.remote_loss_weight * F.cross_entropy(out.remote_logits, y)
                if teacher is not None:
                    loss = loss + spec.distill_weight * distillation_loss(out.mixed_logits, teacher(x),
                                                                          spec.distill_temperature)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                scheduler.step()
                seen += len(y)
                totals["ce"] += float(ce.detach()) * len(y)
                totals["correct"] += int((out.mixed_logits.argmax(1) == y).sum())
                totals["correct_local"] += int((out.local_logits.argmax(1) == y).sum())
                bar.set_postfix(acc=totals["correct"] / seen)
            self._finish_epoch("heads", totals, seen, optimiser, scheduler)
        self.epoch = 0

    def _teacher(self):
        """The frozen unsplit reference (pre-trained extractor and evaluator) as a distillation target."""
        assert self.reference_extractor is not None
        extractor, evaluator = self.reference_extractor.eval(), self.model.evaluator

        @torch.no_grad()
        def logits(x: torch.Tensor) -> torch.Tensor:
            return evaluator(extractor(x))
        return logits

    # ---- quick test-set checks (the bundle's numbers come from `agilenn evaluate`) ---------
    @torch.no_grad()
    def evaluate_reference(self) -> float:
        self.model.eval()
        correct = sum(int((self.model.reference_logits(x).argmax(1) == y).sum())
                      for x, y in batches(self.test_x, self.test_y, 1000))
        return correct / len(self.test_y)

    def evaluate_split(self) -> dict[str, float]:
        m = self.model
        m.eval()
        k = self.config.local_channels
        correct = correct_local = correct_remote = 0
        skew_sum = 0.0
        indices = []
        for x, y in batches(self.test_x, self.test_y, 1000):
            with torch.no_grad():
                features = m.extractor(x)
                out = m.split(features)
            skew_sum += float(skewness(integrated_gradients(m.evaluator, features, y, 1), k).sum())
            correct += int((out.mixed_logits.argmax(1) == y).sum())
            correct_local += int((out.local_logits.argmax(1) == y).sum())
            correct_remote += int((out.remote_logits.argmax(1) == y).sum())
            indices.append(out.indices)
        n = len(self.test_y)
        sent = torch.cat(indices)
        counts = torch.bincount(sent.flatten().long(), minlength=m.quantizer.levels)
        return {"test_accuracy": correct / n, "test_accuracy_local": correct_local / n,
                "test_accuracy_remote": correct_remote / n, "test_skewness": skew_sum / n,
                "test_bits_per_symbol": hard_entropy_bits(sent, m.quantizer.levels),
                "test_level_shares": [round(float(c) / float(counts.sum()), 4) for c in counts],
                "centroids": [round(c, 4) for c in m.quantizer.centroids().tolist()]}


def _move_input_channels(name: str, new: torch.Tensor, old: torch.Tensor, k_old: int, k_new: int,
                         channels: int) -> torch.Tensor | None:
    """A predictor's first weight for another split point k. The local head reads channels [0, k),
    the remote head [k, C), both channel-major; the channels both splits give a head keep their
    weights, channels new to it start at zero. With more local channels the local head starts as
    the source's; with fewer remote channels the remote head loses only the ones that moved.
    None when `name` is no such weight."""
    head = name.split(".", 1)[0]
    if head not in ("local", "remote") or new.dim() < 2 or new.shape[0] != old.shape[0] \
            or new.shape[2:] != old.shape[2:]:
        return None
    old_in, new_in = (k_old, k_new) if head == "local" else (channels - k_old, channels - k_new)
    if old.shape[1] % old_in or new.shape[1] % new_in or old.shape[1] // old_in != new.shape[1] // new_in:
        return None
    keep = min(old_in, new_in) * (old.shape[1] // old_in)
    out = torch.zeros_like(new)
    if head == "local":  # channels 0.. stay where they are
        out[:, :keep] = old[:, :keep]
    else:  # the remote head's last channels are the ones both splits offload
        out[:, -keep:] = old[:, -keep:]
    return out


def offloaded_head(reference: dict[str, torch.Tensor], remote: dict[str, torch.Tensor], local_channels: int,
                   channels: int) -> dict[str, torch.Tensor]:
    """The reference head's weights for a remote head of the same shape that reads only the offloaded
    channels [k, C): the reference head is a remote head of the split at k = 0, so its first weight
    keeps the columns of the channels both read and every other tensor is copied."""
    out = {}
    for name, new in remote.items():
        old = reference[name]
        carried = old.clone() if old.shape == new.shape else _move_input_channels(
            f"remote.{name}", new, old, 0, local_channels, channels)
        if carried is None:
            raise ValueError(f"remote head {name}: shape {tuple(new.shape)} cannot come from the reference "
                             f"head's {tuple(old.shape)}")
        out[name] = carried
    return out


def distillation_loss(logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) on temperature-softened predictions, scaled by T^2 (Hinton et al.)."""
    return F.kl_div(F.log_softmax(logits / temperature, dim=1), F.log_softmax(teacher_logits / temperature, dim=1),
                    log_target=True, reduction="batchmean") * temperature ** 2


def _joint_started(state: dict[str, Any]) -> bool:
    return state["stage"] in ("polish", "heads", "done") or (
        state["stage"] == "joint" and (state["epoch"] > 0 or state["optimiser"] is not None))


def _training_part(config: dict[str, Any], joint_started: bool, polish_started: bool,
                   heads_started: bool) -> dict[str, Any]:
    """The config keys a checkpoint depends on: the name, export settings and thread counts may change
    between runs (a finished run exports under another name); the joint stage's settings (quantizer,
    predictors, losses) until it has taken a step; the polish and heads stages until each has started."""
    ignored = {"name", "export", "threads"}
    ignored |= set() if polish_started else {"polish"}
    ignored |= set() if heads_started else {"heads"}
    if not joint_started:
        ignored |= {"joint_training", "polish", "heads", "quantizer"}
        config = {**config, "networks": {key: value for key, value in config["networks"].items()
                                         if key not in ("local", "remote")}}
    return {key: value for key, value in config.items() if key not in ignored}
