"""One trainer for baselines and KD students.

OCP losses (energy MAE + force L2MAE on free atoms, α_E = 1, α_F = 100) in normalised units, AdamW (amsgrad),
warm-up then a scheduler, EMA weights for validation, gradient clipping, per-sample loss weights, checkpoints with
exact resume (model, KD heads, optimizer, scheduler, EMA, data order, step), CSV and TensorBoard logs.

Training data are one or more sources mixed by ``augkd.mixers`` (a single dataset is a mixture of one): the sampler
draws each origin's share α_k, the losses weigh samples by their origin (``--r-sdft``), and ``epochs.csv`` records
the realised shares and per-origin losses of every epoch.
"""

from __future__ import annotations

import copy
import json
import math
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from augkd.errors import AugkdError, ConfigError
from augkd.mixers import OriginStats, epoch_row, resolve_mixture
from augkd.train.config import BEST_METRICS, SCHEDULERS, TrainConfig
from augkd.train.data import FrameDataset, TrainBatch, collate
from augkd.element_refs import (
    ElementReferences, describe_references, evenly_spaced, fit_source_references, fitted_teacher_references,
    load_references, reference_output,
)
from augkd.train.logs import RunLogs
from augkd.train.schedule import LearningRateSchedule

__all__ = ["BEST_METRICS", "SCHEDULERS", "Normalizer", "TrainConfig", "Trainer", "TrainingError", "resume_differences"]

#: called after every training step with the trainer and the step's log; returning True stops training there (after
#: a checkpoint), e.g. on a time budget. Every rank must get the same callbacks and answer alike.
StepCallback = Callable[["Trainer", dict], "bool | None"]


class TrainingError(AugkdError):
    """Training cannot go on (NaN loss, ...)."""


@dataclass
class Normalizer:
    """Target statistics of the training set; teacher targets are compared in the same units."""

    energy_per_atom_mean: float  # eV/atom
    energy_per_atom_std: float  # eV/atom
    energy_scale: float  # eV: the spread of total energies after removing the per-atom mean
    force_scale: float  # eV/Å: rms force component on free atoms

    @classmethod
    def fit(cls, dataset: FrameDataset, max_rows: int = 2000) -> "Normalizer":
        """Statistics of (up to ``max_rows`` evenly spaced) finite rows, energies as the samples give them
        (referenced when the dataset has element references); a bad row is the loss's to report."""
        step = max(1, len(dataset) // max_rows)
        rows = [(dataset.frame(i), i) for i in range(0, len(dataset), step)]
        rows = [(f, dataset.referenced_energy(i, f)) for f, i in rows
                if math.isfinite(f.energy) and torch.isfinite(torch.as_tensor(f.forces)).all()]
        if not rows:
            raise ConfigError("no row of the training set has finite energy and forces")
        frames = [f for f, _ in rows]
        per_atom = torch.tensor([e / len(f.atoms) for f, e in rows], dtype=torch.float64)
        mean = float(per_atom.mean())
        residual = torch.tensor([e - mean * len(f.atoms) for f, e in rows], dtype=torch.float64)
        forces = torch.cat([torch.as_tensor(f.forces[~f.fixed]) for f in frames])
        std = float(per_atom.std()) if len(frames) > 1 else 1.0
        energy_scale = float(residual.std()) if len(frames) > 1 else 1.0
        force_scale = float(forces.pow(2).mean().sqrt()) if forces.numel() else 1.0
        return cls(mean, max(std, 1e-3), max(energy_scale, 1e-3), max(force_scale, 1e-3))


def distributed_context(device: str | None = "auto") -> tuple[int, int, torch.device]:
    """(rank, world size, device) under ``torchrun`` (WORLD_SIZE/RANK/LOCAL_RANK set), else (0, 1, ``device``).

    ``device``: auto (CUDA when visible), cpu, cuda or cuda:N; under torchrun a CUDA rank takes its local GPU.
    """
    import os

    from augkd.teachers import resolve_device

    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(resolve_device(device))
    if world > 1 and device.type == "cuda":
        device = torch.device(f"cuda:{local}")
    if world > 1 and not torch.distributed.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        torch.distributed.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    rank = torch.distributed.get_rank() if world > 1 else 0
    return rank, world, device


class Trainer:
    """Trains ``config.model`` on the sources of ``config.data`` into ``run_dir`` (resuming if it holds a run).

    Under ``torchrun`` each rank trains on its own disjoint share of every epoch with DDP-averaged gradients; rank 0
    validates, logs and writes checkpoints.
    """

    def __init__(self, config: TrainConfig, run_dir: str | Path):
        from augkd.kd.heads import ProjectionHeads
        from augkd.kd.combine import KDLoss
        from augkd.models.registry import build_model
        from augkd.train.jitter import OnlineJitter

        self.config = config
        self.rank, self.world_size, self.device = distributed_context(config.device)
        self.run_dir = Path(run_dir)
        self.checkpoint_path = self.run_dir / "checkpoints" / "last.pt"
        torch.manual_seed(config.seed)
        self.mixture = resolve_mixture(config.data.mixture_sources(), config.mixer)
        self.train_set = FrameDataset.from_sources([(s.paths, s.origin) for s in self.mixture.sources])
        self.val_set = FrameDataset(list(config.data.val)) if config.data.val else None
        self.student = build_model(config.model.name, **config.model.overrides)
        resuming = self.checkpoint_path.is_file()
        saved = torch.load(self.checkpoint_path, map_location=self.device, weights_only=True) if resuming else None
        self.references = self._element_references(saved)
        recorded = (saved.get("provenance") or {}) if saved is not None else {}
        #: atomic numbers in the training rows (an exported student warns about structures with others)
        self.species = set(recorded.get("species") or ()) or self._species()
        self.val_metrics: dict[str, float] | None = recorded.get("val_metrics")
        self.training_sets = self._training_sets()
        self.train_set.references = self.references
        if self.val_set is not None:
            self.val_set.references = self.references
        if saved is not None:
            self.normalizer = Normalizer(**saved["normalizer"])
        else:
            self.normalizer = Normalizer.fit(self.train_set)
            self.student.fit_energy_normalizer(
                self.normalizer.energy_per_atom_mean, self.normalizer.energy_per_atom_std, self.normalizer.force_scale
            )
            if config.init.checkpoint:
                self._init_from(config.init.checkpoint, keep_normalizer=bool(config.init.normalizer))
            elif self.student.needs_data_fit:
                self._fit_student_to_data()

        self.teacher = None
        teacher_cfg = config.teacher
        self.fill_uncached = teacher_cfg.fills_uncached
        if teacher_cfg.runs_online:
            from augkd.teachers import TorchTeacher

            self.teacher = teacher_cfg.teacher_spec().load(str(self.device))
            if not isinstance(self.teacher, TorchTeacher):
                raise ConfigError(f"teacher {self.teacher.identity.name} has no batched predict(); use cached mode")
        self.teacher_refs = None
        if self.references is not None and teacher_cfg.mode != "none":
            self.teacher_refs = self._teacher_references(saved)
            self.train_set.teacher_refs = self.teacher_refs
        self.kd = KDLoss(
            list(config.kd.losses),
            alpha_energy=config.loss.energy_coef,
            alpha_force=config.loss.force_coef,
            energy_scale=self.normalizer.energy_scale,
            force_scale=self.normalizer.force_scale,
            auto_fraction=config.kd.auto_lambda or 1.0,
        )
        # None unless jitter.mode is set; its teacher targets are referenced as the KD ones are
        self.jitter = None
        if config.jitter.enabled:
            self.jitter = OnlineJitter(
                config.jitter, seed=config.seed, rank=self.rank, alpha_energy=config.loss.energy_coef,
                alpha_force=config.loss.force_coef, energy_scale=self.normalizer.energy_scale,
                force_scale=self.normalizer.force_scale, teacher_refs=self.teacher_refs,
            )
        self.heads = None
        if len(self.kd):
            teacher_shapes = self._teacher_feature_shapes()
            teacher_name = self.teacher.identity.name if self.teacher else "the cached teacher"
            self.kd.check(self.student.feature_shapes(), teacher_shapes, self.student.name, teacher_name)
            # seeded on their own: loading a teacher may draw random numbers (a model built, then its weights loaded)
            torch.manual_seed(config.seed + 1)
            self.heads = ProjectionHeads(self.student.feature_shapes(), teacher_shapes, self.kd)
            self.student.kd_heads = self.heads  # trained and saved with the student, stripped for deployment

        self.student.to(self.device)
        self.model = self.student
        if self.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.model = DistributedDataParallel(self.student, device_ids=[self.device] if self.device.type == "cuda" else None)
        optim = config.optim
        self.optimizer = torch.optim.AdamW(
            self.student.parameters(), lr=optim.lr, weight_decay=optim.weight_decay, amsgrad=optim.amsgrad
        )
        self.schedule = LearningRateSchedule(self.optimizer, optim)
        self.ema = copy.deepcopy(self.student).eval()
        for parameter in self.ema.parameters():
            parameter.requires_grad_(False)
        self.sampler = self.mixture.sampler(
            config.batch_size, config.seed, self.rank, self.world_size, sizes=self.train_set.source_sizes
        )
        self.origin_stats = OriginStats(self.mixture.origins)
        self.step = 0
        self.best: float | None = None
        if saved is not None:
            self._restore(saved)

    # -- set-up helpers ----------------------------------------------------------------------------------------
    def _element_references(self, saved: dict[str, Any] | None) -> ElementReferences | None:
        """Per-source element references (``data.element_refs``): fitted on each source's training rows, read from
        a file, or none; a resumed run keeps those it started with."""
        if saved is not None:
            stored = saved.get("element_refs")
            return ElementReferences.from_extra(stored) if stored is not None else None
        data = self.config.data
        setting = data.element_refs
        if setting == "none":
            return None
        origins = [source.origin for source in self.mixture.sources]
        predict = data.predict_origin
        if predict is not None and predict not in origins:
            raise ConfigError(f"data.predict_origin {predict!r} is not a training origin ({', '.join(origins)})")
        loaded = None if setting == "fit" else load_references(setting)
        if predict is None:
            reference = self.config.mixer.reference_origin
            stated = loaded.predict_origin if loaded is not None else reference
            predict = stated if stated in origins else reference if reference in origins else origins[0]
        if loaded is None:
            references = fit_source_references(self.train_set, origins, predict)
            if self.rank == 0:
                print("augkd: " + describe_references(references).replace("\n", "\naugkd: "), file=sys.stderr)
            return references
        missing = [o for o in origins if o not in loaded.origins]
        if missing:
            raise ConfigError(f"element references {setting} have none for origin(s) {', '.join(missing)}")
        return ElementReferences(loaded.origins, predict)

    def _teacher_references(self, saved: dict[str, Any] | None, most_online: int = 128) -> np.ndarray:
        """The teacher's own element references: fitted on its cached energies of training rows, else on its
        predictions for up to ``most_online`` of them, so KD targets are referenced like the rows they teach."""
        if saved is not None and saved.get("teacher_refs") is not None:
            return np.asarray(saved["teacher_refs"], dtype=np.float64)
        numbers, energies = [], []
        for index in evenly_spaced(0, len(self.train_set), 10000):
            frame = self.train_set.frame(index)
            if "teacher_energy" in frame.data and math.isfinite(float(frame.data["teacher_energy"])):
                numbers.append(frame.atoms.numbers)
                energies.append(float(frame.data["teacher_energy"]))
        if not energies and self.teacher is not None:
            chosen = list(evenly_spaced(0, len(self.train_set), most_online))
            for start in range(0, len(chosen), self.config.batch_size):
                samples = [self.train_set[i] for i in chosen[start:start + self.config.batch_size]]
                output = self.teacher.predict(collate(samples).to(self.device).batch)
                numbers += [s.data.atomic_numbers.numpy() for s in samples]
                energies += output.energy.detach().double().cpu().tolist()
        if not energies:
            raise ConfigError("teacher.mode=cached but the training rows carry no teacher outputs (run `augkd label`)")
        return fitted_teacher_references(numbers, energies)

    def _teacher_scale(self, output, batch):
        """Online teacher outputs referenced with the teacher's own references, as cached ones are on loading."""
        if self.teacher_refs is None:
            return output
        return reference_output(output, batch, self.teacher_refs, sign=-1.0)

    def _init_from(self, path: str, keep_normalizer: bool) -> None:
        """Fine-tuning: the weights of ``path`` (EMA weights of a run's last.pt); its normaliser only on request."""
        from augkd.train.init import initial_weights

        weights, normalizer = initial_weights(path, self.student)
        fitted = {name: buffer.clone() for name, buffer in self.student.named_buffers()
                  if name in ("energy_shift", "energy_scale", "force_scale")}
        _, unexpected = self.student.load_state_dict(weights, strict=False)
        if unexpected:
            raise ConfigError(f"--init-from {path}: weights {unexpected[:5]} do not fit model {self.student.name}")
        if keep_normalizer and normalizer is not None:
            self.normalizer = Normalizer(**normalizer)
        else:  # the normaliser fitted on this run's data stands
            for name, buffer in fitted.items():
                self.student.get_buffer(name).copy_(buffer)

    def _fit_student_to_data(self) -> None:
        """A fresh student's data-fitted constants (GemNet-OC's scale factors) from the first training rows; a
        resumed run takes them from its checkpoint."""
        rows = [self.train_set[i] for i in range(min(len(self.train_set), self.config.batch_size))]
        unfitted = self.student.fit_to_data(collate(rows).batch)
        if unfitted and self.rank == 0:
            warnings.warn(f"the first training batch left {len(unfitted)} scale factors at 1 ({', '.join(unfitted)})")

    def _teacher_feature_shapes(self) -> dict[str, tuple]:
        online = None
        if self.teacher is not None:
            shapes = dict(self.teacher.feature_shapes())
            online = {**shapes, "atom_energy": ()}
            if not self.fill_uncached:
                return online
        # the first row of each source tells whether (and what) it caches; sources may differ (DFT rows carry none)
        starts = [sum(self.train_set.source_sizes[:k]) for k in range(len(self.train_set.source_sizes))]
        sample = next((t for t in (self.train_set[i].teacher for i in starts) if t is not None), None)
        if sample is None:
            raise ConfigError("teacher.mode=cached but the training rows carry no teacher outputs (run `augkd label`)")
        shapes = {name: tuple(t.shape[1:]) for name, t in sample["features"].items()}
        if "atom_energy" in sample:
            shapes["atom_energy"] = ()
        if online is not None:
            derivable = {"edge2node", "edge_vector"} if "edge" in online else set()
            missing = sorted(name for name in shapes if online.get(name) != shapes[name] and name not in derivable)
            if missing:
                raise ConfigError(f"teacher.uncached=online: teacher {self.teacher.identity.name} does not give the "
                                  f"cached {missing} with the cached shapes; label the rows with that teacher")
        return shapes

    # -- state -------------------------------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "student": self.student.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            **self.schedule.state_dict(),  # "scheduler" and "plateau"
            "sampler": self.sampler.state_dict(),
            "origin_stats": self.origin_stats.state_dict(),
            "kd": self.kd.state_dict(),
            "normalizer": vars(self.normalizer),
            "element_refs": self.references.to_extra() if self.references is not None else None,
            "teacher_refs": self.teacher_refs.tolist() if self.teacher_refs is not None else None,
            "best": self.best,
            "provenance": self._provenance(),
            "torch_rng": torch.get_rng_state(),
            "config": json.dumps(self.config.values, sort_keys=True),
        }

    def _restore(self, saved: dict[str, Any]) -> None:
        differences = resume_differences(json.loads(saved["config"]), self.config.values)
        if differences:
            raise ConfigError(f"{self.run_dir} holds a run with another config ({'; '.join(differences)}); "
                              f"use a new --out")
        if self.config.steps < int(saved["step"]):
            raise ConfigError(f"{self.run_dir} is at step {saved['step']}: --steps {self.config.steps} "
                              f"cannot shorten it")
        self.student.load_state_dict(saved["student"])
        self.ema.load_state_dict(saved["ema"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.schedule.load_state_dict(saved)
        self.sampler.load_state_dict(saved["sampler"])
        self.origin_stats.load_state_dict(saved["origin_stats"])
        self.kd.load_state_dict(saved["kd"])
        self.best = saved["best"]
        self.step = int(saved["step"])
        torch.set_rng_state(saved["torch_rng"])

    def save_checkpoint(self) -> None:
        if self.rank != 0:
            return
        path = self.checkpoint_path
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        torch.save(self._state(), tmp)
        tmp.replace(path)

    def export(self, name: str) -> Path:
        """The EMA student without KD heads, as a model checkpoint (``augkd evaluate``, ``ckpt:`` teachers)."""
        from augkd.kd.heads import strip_kd_heads
        from augkd.models.checkpoint import save_model
        from augkd.models.registry import build_model

        model = build_model(self.student.name, **self.student.config)
        model.load_state_dict({k: v.cpu() for k, v in strip_kd_heads(self.ema.state_dict()).items()})
        extra = {"step": self.step, "normalizer": vars(self.normalizer), **self._provenance()}
        if self.references is not None:  # the model predicts referenced energies: these put them back on a scale
            extra["element_refs"] = self.references.to_extra()
        return save_model(self.run_dir / "checkpoints" / name, model, extra)

    def _species(self) -> set[int]:
        """Every element of the training rows (one read of each row, at the start of a run)."""
        species: set[int] = set()
        for index in range(len(self.train_set)):
            species.update(self.train_set.frame(index).atoms.numbers.tolist())
        return species

    def _training_sets(self) -> list[dict[str, Any]]:
        """Each training set: path, origin, its manifest's sha256 and who labelled its rows (read once per run)."""
        from augkd.hashing import sha256_file

        def name(value: Any) -> Any:
            return value.get("name") if isinstance(value, dict) else value

        sets = []
        for source in self.mixture.sources:
            for path in source.paths:
                manifest_path = Path(path) / "manifest.json"
                manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
                sets.append({
                    "path": str(Path(path).resolve()), "origin": source.origin,
                    "manifest_sha256": sha256_file(manifest_path) if manifest_path.is_file() else None,
                    "labelled_by": name(manifest.get("labelled_by") or manifest.get("teacher")),
                })
        return sets

    def _provenance(self) -> dict[str, Any]:
        """What a student records of its training: the species it saw, the training sets, the online teacher, the
        latest validation metrics (kept in last.pt too, so a resumed run and an export of last.pt carry them)."""
        return {
            "species": sorted(self.species) or None,
            "datasets": self.training_sets,
            "teacher": self.teacher.identity.to_dict() if self.teacher is not None else None,
            "val_metrics": self.val_metrics,
        }

    # -- one step ----------------------------------------------------------------------------------------------
    def _targets(self, batch: TrainBatch, samples: list):
        """The teacher's side of the KD losses: online, cached, or cached with the teacher filling uncached rows."""
        from augkd.kd.targets import TeacherTargets

        if self.teacher is not None and (not self.fill_uncached or batch.teacher is None):
            return TeacherTargets.from_output(self._teacher_scale(self.teacher.predict(batch.batch), batch.batch))
        if batch.teacher is None:
            return None
        rows, atoms = batch.teacher_rows, batch.teacher_atoms
        # rows without cached outputs get zeros and are masked out of the per-atom losses (or filled online)
        targets = TeacherTargets.from_cached(batch.teacher, rows, atoms)
        if self.fill_uncached and not bool(rows.all()):
            uncached = collate([s for s, cached in zip(samples, rows.tolist()) if not cached]).to(self.device)
            online = self._teacher_scale(self.teacher.predict(uncached.batch), uncached.batch)
            targets.fill(TeacherTargets.from_output(online), rows, atoms)
        return targets

    def _origin_losses(self, output, data, info, origins: list[str]) -> dict[str, float]:
        """Unweighted L_E and L_F of each origin in the batch (logged, and summed into this epoch's means)."""
        from augkd.reductions import energy_loss, force_loss

        log: dict[str, float | str] = {}
        for origin in self.mixture.origins:  # every origin gets its columns, blank when absent from the batch
            log[f"loss_energy_{origin}"] = log[f"loss_forces_{origin}"] = ""
        free = info.free if info.free is not None else torch.ones_like(info.batch, dtype=torch.bool)
        for origin in sorted(set(origins)):
            systems = torch.tensor([o == origin for o in origins], device=info.batch.device)
            atoms = systems[info.batch]
            with torch.no_grad():
                le = float(energy_loss(output.energy, data.energy, energy_scale=self.normalizer.energy_scale,
                                       system_mask=systems))
                lf = float(force_loss(output.forces, data.forces, info, force_scale=self.normalizer.force_scale,
                                      atom_mask=atoms))
            n_systems, n_free = int(systems.sum()), int((atoms & free).sum())
            self.origin_stats.add(origin, le * n_systems, n_systems, lf * n_free, n_free)
            log[f"loss_energy_{origin}"] = le
            log[f"loss_forces_{origin}"] = lf if n_free else ""
        return log

    def train_step(self) -> dict[str, float]:
        from augkd.kd.losses import ocp_loss
        from augkd.reductions import LossBatch

        indices = self.sampler.next_batch()
        samples = [self.train_set[i] for i in indices]
        batch = collate(samples).to(self.device)
        data = batch.batch
        self.model.train()
        output = self.model(data)
        info = LossBatch.from_data(data)
        weights = self.mixture.weights(batch.origins)  # None when every origin weighs the same
        if weights is not None:
            weights = weights.to(self.device)
        loss, parts = ocp_loss(
            output.energy, output.forces, data.energy, data.forces, info,
            alpha_energy=self.config.loss.energy_coef, alpha_force=self.config.loss.force_coef,
            energy_scale=self.normalizer.energy_scale, force_scale=self.normalizer.force_scale,
            sample_weight=weights,
        )
        log = {"loss_energy": parts["energy"], "loss_forces": parts["forces"], "loss_base": float(loss.detach())}
        log.update(self._origin_losses(output, data, info, batch.origins))
        if len(self.kd):
            targets = self._targets(batch, samples)
            if targets is not None:
                if self.kd.needs_calibration:
                    start = self.kd.parts(output, targets, info, self.heads, sample_weight=weights)
                    self.kd.calibrate({k: float(v.detach()) for k, v in start.items()}, float(loss.detach()))
                    self._record_lambdas()
                kd_loss, kd_parts = self.kd(output, targets, info, self.heads, sample_weight=weights)
                loss = loss + kd_loss
                log.update({f"kd_{k}": v for k, v in kd_parts.items()})
            else:  # no row of this batch has teacher outputs: blank, so the CSV keeps the KD columns
                log.update({f"kd_{name}": "" for name in self.kd.names})
        if self.jitter is not None:  # a pseudo-loss on teacher-labelled displaced copies (augkd.train.jitter)
            jitter_loss, jitter_log = self.jitter.loss(data, self.student, self.teacher, self.step)
            loss = loss + jitter_loss
            log.update(jitter_log)
        if not torch.isfinite(loss):
            raise TrainingError(
                f"loss is {float(loss)} at step {self.step + 1} (batch sids {batch.sids}); "
                f"the last good checkpoint is {self.checkpoint_path}"
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.student.parameters(), self.config.optim.grad_clip)
        self.optimizer.step()
        self.schedule.step()
        self._update_ema()
        self.step += 1
        log.update(loss=float(loss.detach()), grad_norm=float(grad_norm), lr=self.optimizer.param_groups[0]["lr"])
        return log

    def _record_lambdas(self) -> None:
        """The λ that ``auto`` chose: on stderr and in ``config.json`` (``resolved.kd_lambdas``)."""
        if self.rank != 0:
            return
        chosen = ", ".join(f"{k} {v:.4g}" for k, v in self.kd.lambdas.items())
        print(f"augkd: KD λ chosen by auto: {chosen}", file=sys.stderr)
        self._write_config()

    def _write_config(self) -> None:
        """``config.json``: the run's settings, plus every λ known so far (``auto`` once it has been chosen)."""
        values = self.config.to_dict()
        lambdas = {k: v for k, v in self.kd.lambdas.items() if v is not None}
        if lambdas:
            values["resolved"] = {"kd_lambdas": lambdas}
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "config.json").write_text(json.dumps(values, indent=1, sort_keys=True))

    @torch.no_grad()
    def _update_ema(self) -> None:
        decay = self.config.optim.ema_decay
        # warm start (as torch_ema does): early on the average follows the weights more closely
        decay = min(decay, (1 + self.step) / (10 + self.step))
        for ema, live in zip(self.ema.state_dict().values(), self.student.state_dict().values()):
            if ema.is_floating_point():
                ema.mul_(decay).add_(live.detach(), alpha=1 - decay)
            else:
                ema.copy_(live)

    # -- validation --------------------------------------------------------------------------------------------
    def validate(self, model: torch.nn.Module | None = None, dataset: FrameDataset | None = None) -> dict[str, float]:
        from augkd.train.evaluate import evaluate_model

        model = model if model is not None else self.ema
        dataset = dataset if dataset is not None else self.val_set
        return evaluate_model(model, dataset, self.config.batch_size, self.device)

    def _after_validation(self, metrics: dict[str, float]) -> None:
        name = self.config.best_metric
        value = metrics[name]
        higher = BEST_METRICS[name]
        better = self.best is None or (value > self.best if higher else value < self.best)
        self.val_metrics = {key: float(v) for key, v in metrics.items()}
        if better and math.isfinite(value):
            self.best = value
            self.export("best.pt")
        self.schedule.after_validation(better)

    # -- the loop ----------------------------------------------------------------------------------------------
    def _epoch_summary(self) -> dict[str, Any]:
        """This epoch so far: the realised α of every origin (all ranks' draws) and its mean losses (this rank)."""
        return epoch_row(
            self.sampler.epoch, self.step, self.sampler.epoch_done, self.sampler.consumed_counts(),
            self.mixture.origins, [s.alpha for s in self.mixture.sources], self.origin_stats,
        )

    def fit(self, progress: bool = True, callbacks: Sequence[StepCallback] = ()) -> dict[str, Any]:
        """Train to ``config.steps``, or until a callback asks to stop (then with a checkpoint at that step).

        ``callbacks(trainer, log)`` run after every step, on every rank, after its logging and validation.
        """
        from tqdm import tqdm

        lead = self.rank == 0
        if lead:
            self._write_config()
            (self.run_dir / "mixture.json").write_text(json.dumps(self.mixture.to_dict(), indent=1))
            if self.step:
                print(f"augkd: resuming {self.run_dir} from step {self.step} of {self.config.steps}", file=sys.stderr)
        logs = RunLogs(self.run_dir) if lead else None
        total = self.config.steps
        bar = tqdm(total=total, initial=self.step, unit="step", disable=not (progress and lead), dynamic_ncols=True)
        started = time.time()
        metrics: dict[str, float] = {}
        try:
            while self.step < total:
                log = self.train_step()
                bar.update(1)
                bar.set_postfix(loss=f"{log['loss']:.4g}", refresh=False)
                last = self.step == total
                if lead:
                    logs.train(self.step, self.sampler.epoch, time.time() - started, log)
                    if self.sampler.epoch_done or last:  # an epoch ended, or training did within one
                        logs.epoch(self._epoch_summary())
                    if self.val_set is not None and (self.step % self.config.eval_every == 0 or last):
                        metrics = self.validate()
                        logs.val(self.step, metrics)
                        self._after_validation(metrics)
                if self.sampler.epoch_done:
                    self.origin_stats.reset()
                if self.world_size > 1:
                    self.schedule.share_plateau_factor(self.device)
                stop = any([bool(callback(self, log)) for callback in callbacks])  # every callback sees every step
                if self.step % self.config.checkpoint_every == 0 or last or stop:
                    self.save_checkpoint()
                if stop:
                    break
        finally:
            bar.close()
            if logs is not None:
                logs.close()
        if self.step == total and lead:
            self.export("final.pt")
        if self.world_size > 1:
            torch.distributed.barrier()  # the others wait until rank 0 has written everything
        return {"step": self.step, "best": self.best, "val": metrics}


#: keys that may change between the runs of one directory: extending the schedule and moving to another device
RESUMABLE_KEYS = ("steps", "device")


def resume_differences(saved: dict[str, Any], current: dict[str, Any], prefix: str = "") -> list[str]:
    """``key (old → new)`` for every setting that differs, except those a resumed run may change."""
    found = []
    for key in sorted(set(saved) | set(current)):
        dotted = f"{prefix}{key}"
        if not prefix and key in RESUMABLE_KEYS:
            continue
        old, new = saved.get(key), current.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            found += resume_differences(old, new, f"{dotted}.")
        elif old != new:
            found.append(f"{dotted} ({old!r} → {new!r})")
    return found
