"""Relax many structures at once: batched FIRE over one batched state, one teacher forward pass per step.

``relax_batched(systems, teacher, config)`` relaxes every system with FIRE (``augkd.generators.fire``; ASE's
parameters and semantics) and yields each system's ``Trajectory`` as soon as it ends, recorded exactly as the
ASE path (``augkd.generators.relax.relax_each``, the same contract) records it: frame k holds the positions after k steps with the energy
and unconstrained forces there, the run ends when the largest force on a free atom is below ``fmax`` or after
``steps`` steps, and non-finite labels or a teacher error end that system's run with ``failure`` set, the frames
before kept. So subsampling, anomaly filtering and writing are the same code for both paths.

The batch is in flight (``augkd.generators.inflight``): a system leaves when it converges, runs out of steps or
fails, and waiting systems join while the batch is within its limits. The running systems are one ``BatchState``
(``augkd.generators.state``) that ``fire_step`` moves: every system keeps its own FIRE memory, step count and step
limit, FixAtoms (fixed atoms never move), cell and pbc, so it follows the same path whichever systems share its
forward passes (up to the teacher's float rounding, which can depend on the batch). A teacher
error for a batch is traced to the system(s) that cause it by running the batch's systems one at a time, and
only those fail; a batch that runs out of device memory is finished the same way and halves the atom limit.
Teacher outputs beyond energy and forces (per-atom energies, features) are captured from the
same forward pass on the frames the caller names. ``RelaxerChoice`` (``choose_relaxer``) says which relaxer a
generation runs.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from ase import Atoms

from augkd.errors import ConfigError
from augkd.generators.fire import FireParams, fire_init, fire_step, segment_max
from augkd.generators.inflight import AUTO, BatchConfig, InFlightBatcher, SystemCost, calibrate, count_edges
from augkd.generators.relax import DEFAULT_ASE_OPTIMIZER, Capture, Frame, RelaxConfig, Trajectory
from augkd.generators.state import BatchState
from augkd.teachers import TeacherSpec, TorchTeacher
from augkd.teachers.spec import TORCH_BACKENDS

RELAXERS = ("auto", "batched", "ase")
BATCHED_OPTIMIZER = "FIRE"


@dataclass(frozen=True)
class RelaxerChoice:
    relaxer: str  # "batched" or "ase"
    optimizer: str  # the optimizer that runs
    note: str | None = None  # why "auto" chose ASE, for the user


def choose_relaxer(requested: str, teacher_spec: TeacherSpec | str, optimizer: str | None) -> RelaxerChoice:
    """The relaxer and optimizer a generation runs, from the request, the teacher spec and the optimizer asked for.

    "auto" takes the batched relaxer for torch teachers with FIRE (or no optimizer named), else ASE's path with a
    note saying why; an explicit "batched" that cannot be honoured is a ``ConfigError``.
    """
    if requested not in RELAXERS:
        raise ConfigError(f"relaxer '{requested}' is not one of {RELAXERS}")
    torch_teacher = TeacherSpec.of(teacher_spec).is_torch
    fire_ok = optimizer in (None, BATCHED_OPTIMIZER)
    if requested == "ase":
        return RelaxerChoice("ase", optimizer or DEFAULT_ASE_OPTIMIZER)
    if requested == "batched":
        if not torch_teacher:
            raise ConfigError(
                f"relaxer 'batched' needs a torch teacher ({', '.join(b + ':' for b in TORCH_BACKENDS)}…); "
                f"teacher '{teacher_spec}' is an ASE calculator: use --relaxer ase"
            )
        if not fire_ok:
            raise ConfigError(f"relaxer 'batched' runs FIRE only (optimizer '{optimizer}' asked for): use --relaxer ase")
        return RelaxerChoice("batched", BATCHED_OPTIMIZER)
    if not torch_teacher:
        note = f"relaxer: ase, one system at a time (teacher '{teacher_spec}' is an ASE calculator, it cannot batch)"
        return RelaxerChoice("ase", optimizer or DEFAULT_ASE_OPTIMIZER, note)
    if not fire_ok:
        note = f"relaxer: ase, one system at a time (the batched relaxer runs FIRE; optimizer '{optimizer}' is ASE's)"
        return RelaxerChoice("ase", optimizer, note)
    return RelaxerChoice("batched", BATCHED_OPTIMIZER)


@dataclass
class RelaxStats:
    """What a ``relax_batched`` run did (filled in while it runs)."""

    forward_passes: int = 0
    frames: int = 0  # frames recorded, all systems
    max_atoms: int | None = None  # the atom limit in force (measured when "auto")
    memory_max_atoms: int | None = None  # "auto": the most atoms per pass the memory estimate allows
    atoms_per_s: dict[int, float] = field(default_factory=dict)  # "auto": measured speed by atoms per pass
    calibration_seconds: float = 0.0  # "auto": time spent measuring (once per teacher, device and sizes)
    largest_batch_atoms: int = 0
    largest_batch_systems: int = 0
    isolated_errors: int = 0  # batches whose teacher error was traced system by system
    out_of_memory: int = 0  # batches that ran out of device memory (each halves the atom limit)
    seconds: float = 0.0


@dataclass
class _System:
    """Host-side bookkeeping of one system in flight."""

    index: int
    natoms: int
    data: object  # its fairchem AtomicData (numbers, cell, pbc, tags; positions set per step)
    trajectory: Trajectory = field(default_factory=Trajectory)


def _atomic_data(atoms: Atoms, dtype: torch.dtype):
    from augkd._fairchem import quiet_fairchem

    quiet_fairchem()
    from fairchem.core.datasets.atomic_data import AtomicData

    return AtomicData.from_ase(atoms, r_energy=False, r_forces=False, r_stress=False, target_dtype=dtype)


def _collate(datas: list, device: torch.device):
    from fairchem.core.datasets.atomic_data import atomicdata_list_to_batch

    return atomicdata_list_to_batch(datas).to(device)


def _with_positions(batch, positions: torch.Tensor, dtype: torch.dtype):
    # a fresh tensor each pass: gradient-force teachers mark the batch's positions as requiring grad
    batch.pos = positions.to(dtype=dtype, copy=True)
    return batch


def _evaluate(teacher, batch, systems: list[_System], positions, dtype, device, chunk_atoms: int | None):
    """The teacher's outputs for the running systems, {position in the batch: error text} for systems whose
    evaluation raised, and whether a pass ran out of device memory.

    One pass over ``batch`` when it holds at most ``chunk_atoms`` atoms, else consecutive chunks within that limit.
    A pass that raises is split in halves and retried, down to single systems: a system that raises alone fails,
    the others get their outputs from the smaller passes.
    """
    offsets = np.cumsum([0] + [s.natoms for s in systems])
    errors: dict[int, str] = {}
    out_of_memory = False

    def run(group: list[int], collated=None) -> list[tuple[list[int], object]]:
        nonlocal out_of_memory
        if collated is None:
            collated = _collate([systems[p].data for p in group], device)
        rows = slice(offsets[group[0]], offsets[group[-1] + 1])
        try:
            return [(group, teacher.predict(_with_positions(collated, positions[rows], dtype)))]
        except Exception as exc:  # a teacher failure is data about a system, never fatal to the others
            if isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower():
                out_of_memory = True
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            if len(group) == 1:
                errors[group[0]] = f"{type(exc).__name__}: {exc}"
                return [(group, None)]
        middle = len(group) // 2
        return run(group[:middle]) + run(group[middle:])

    everyone = list(range(len(systems)))
    if chunk_atoms is None or int(offsets[-1]) <= chunk_atoms:
        parts = run(everyone, batch)
    else:
        parts, start = [], 0
        for end in range(1, len(systems) + 1):
            if end == len(systems) or offsets[end + 1] - offsets[start] > chunk_atoms:
                parts += run(everyone[start:end])
                start = end
    if len(parts) == 1 and parts[0][1] is not None:
        return parts[0][1], errors, out_of_memory
    return _join_outputs(parts, [s.natoms for s in systems], positions.dtype), errors, out_of_memory


def _join_outputs(parts: list, natoms: list[int], dtype: torch.dtype):
    """(systems, ModelOutput or None) of consecutive groups joined into one output; NaN for a group without one."""
    from augkd.models.interface import ModelOutput

    template = next((output for _, output in parts if output is not None), None)

    def joined(get, per_atom: bool = True) -> torch.Tensor:
        pieces = []
        for group, output in parts:
            if output is not None:
                pieces.append(get(output).detach().to("cpu", dtype=dtype))
            else:
                rows = sum(natoms[p] for p in group) if per_atom else len(group)
                shape = tuple(get(template).shape[1:]) if template is not None else ()
                pieces.append(torch.full((rows, *shape), float("nan"), dtype=dtype))
        return torch.cat(pieces)

    forces_shape = (lambda o: o.forces) if template is not None else (lambda o: None)
    return ModelOutput(
        energy=joined(lambda o: o.energy.reshape(-1), per_atom=False),
        forces=joined(forces_shape) if template is not None else torch.full((sum(natoms), 3), float("nan"), dtype=dtype),
        atom_energy=joined(lambda o: o.atom_energy),
        features={name: joined(lambda o, name=name: o.features[name]) for name in (template.features if template else {})},
    )


def relax_batched(
    systems: Sequence[Atoms],
    teacher: TorchTeacher,
    config: RelaxConfig,
    batching: BatchConfig = BatchConfig(),
    *,
    max_steps: int | Sequence[int] | None = None,
    fire: FireParams = FireParams(),
    capture: Capture | None = None,
    device: str | torch.device | None = None,
    stats: RelaxStats | None = None,
) -> Iterator[tuple[int, Trajectory]]:
    """Relax ``systems`` with FIRE and ``teacher`` (a ``TorchTeacher``); yields (index, trajectory) as runs end.

    ``config``: fmax (eV/Å, on free atoms) and steps; its optimizer must be FIRE or None. ``max_steps``: per-system
    step limits overriding ``config.steps``. ``batching``: the in-flight batch limits. ``capture``: extra teacher
    outputs to keep (see ``Capture``). ``device``: where the state lives; default the teacher's ``device``.
    """
    if config.optimizer not in (None, BATCHED_OPTIMIZER):
        raise ConfigError(f"the batched relaxer runs FIRE only (optimizer '{config.optimizer}' asked for)")
    if not isinstance(teacher, TorchTeacher):
        raise ConfigError(f"teacher {teacher.identity.name} cannot predict on a batch: use the ASE relaxer")
    stats = stats if stats is not None else RelaxStats()
    started_at = time.perf_counter()
    device = torch.device(device if device is not None else teacher.device)
    dtype = teacher.dtype  # positions go to the teacher in its own float dtype
    limits = list(max_steps) if isinstance(max_steps, Sequence) else [config.steps if max_steps is None else max_steps] * len(systems)
    if len(limits) != len(systems):
        raise ConfigError(f"max_steps has {len(limits)} entries for {len(systems)} systems")
    if capture is not None:
        offered = set(teacher.offered_properties) - {"energy", "forces"}
        missing = [name for name in capture.names if name not in offered]
        if missing:
            raise ConfigError(f"teacher {teacher.identity.name} cannot capture {missing} (it offers {sorted(offered)})")

    batcher = _batcher(systems, teacher, batching, dtype, device, stats)
    chunk_atoms: int | None = None  # set once a pass ran out of memory: running systems are then evaluated in chunks
    active: list[_System] = []
    state: BatchState | None = None  # the running systems, in the order of ``active``
    batch = None
    while batcher or active:
        atoms_in_flight = 0 if state is None else int(state.positions.shape[0])
        joined = batcher.admit(atoms_in_flight, sum(batcher.costs[s.index].edges for s in active), len(active))
        if joined:
            entering = [_System(index, len(systems[index]), _atomic_data(systems[index], dtype)) for index in joined]
            new = fire_init(BatchState.from_atoms([systems[i] for i in joined], [limits[i] for i in joined], device), fire)
            active += entering
            state = new if state is None else BatchState.concat([state, new])
            batch = None
        if batch is None:
            batch = _collate([s.data for s in active], device)
        natoms = state.natoms
        stats.largest_batch_atoms = max(stats.largest_batch_atoms, int(state.positions.shape[0]))
        stats.largest_batch_systems = max(stats.largest_batch_systems, len(active))

        output, errors, out_of_memory = _evaluate(teacher, batch, active, state.positions, dtype, device, chunk_atoms)
        stats.forward_passes += 1
        stats.isolated_errors += bool(errors)
        if out_of_memory:  # the limit was too generous for this device: from now on half the atoms per pass
            atoms = int(state.positions.shape[0])
            chunk_atoms = max(min(chunk_atoms or atoms, atoms) // 2, 1)
            batcher.max_atoms = chunk_atoms
            stats.max_atoms = chunk_atoms
            stats.out_of_memory += 1
        energy = output.energy.detach().to(device=device, dtype=torch.float64).reshape(-1)
        forces = output.forces.detach().to(device=device, dtype=torch.float64)
        finite = torch.isfinite(energy) & (
            torch.segment_reduce(torch.isfinite(forces).all(dim=1).to(torch.float64), "min", lengths=natoms) > 0
        )
        constrained = forces * state.free[:, None]
        fmax = segment_max(torch.sqrt((constrained * constrained).sum(dim=1)), natoms)

        # one transfer per pass, then per-system views on the host
        host_positions = state.positions.cpu().numpy()
        host_forces = forces.cpu().numpy()
        host_energy = energy.cpu().numpy()
        host_finite = finite.cpu().numpy()
        host_converged = (fmax < config.fmax).cpu().numpy()
        host_step = state.step.cpu().numpy()
        host_done = (state.step >= state.max_steps).cpu().numpy()
        offsets = np.cumsum([0] + [s.natoms for s in active])
        leaving = np.zeros(len(active), dtype=bool)
        captured_rows = []
        for position, system in enumerate(active):
            trajectory = system.trajectory
            if position in errors:
                trajectory.failure, trajectory.error = "calculator_error", errors[position]
                leaving[position] = True
                continue
            if not host_finite[position]:
                trajectory.failure = "nonfinite_labels"
                leaving[position] = True
                continue
            rows = slice(offsets[position], offsets[position + 1])
            step = int(host_step[position])
            trajectory.frames.append(
                Frame(host_positions[rows].copy(), float(host_energy[position]), host_forces[rows].copy(), step)
            )
            stats.frames += 1
            trajectory.converged = bool(host_converged[position])
            leaving[position] = trajectory.converged or bool(host_done[position])
            if capture is not None and (capture.frames is None or capture.frames(system.index, step, bool(leaving[position]))):
                captured_rows.append((position, rows))
        if captured_rows:
            _attach_outputs(output, capture.names, captured_rows, active)

        if leaving.any():
            for position in np.flatnonzero(leaving):
                yield active[position].index, active[position].trajectory
            keep = torch.from_numpy(~leaving).to(device)
            active = [s for s, gone in zip(active, leaving) if not gone]
            constrained = constrained[torch.repeat_interleave(keep, natoms)]
            energy = energy[keep]
            state = state.select(keep)
            batch = None
            if not active:
                state = None
                continue
        state = fire_step(state, constrained, energy, fire)
    stats.seconds += time.perf_counter() - started_at


def _attach_outputs(output, names: tuple[str, ...], rows: list[tuple[int, slice]], active: list[_System]) -> None:
    """Copy the named outputs of the chosen systems' atoms to the host and onto their newest frames."""
    index = torch.cat([torch.arange(r.start, r.stop) for _, r in rows])
    tensors = {name: (output.atom_energy if name == "atom_energy" else output.features[name]) for name in names}
    host = {name: value.detach().index_select(0, index.to(value.device)).float().cpu().numpy() for name, value in tensors.items()}
    start = 0
    for position, r in rows:
        n = r.stop - r.start
        active[position].trajectory.frames[-1].outputs = {name: values[start : start + n].copy() for name, values in host.items()}
        start += n


def _batcher(systems: Sequence[Atoms], teacher: TorchTeacher, batching: BatchConfig, dtype, device,
             stats: RelaxStats) -> InFlightBatcher:
    edges = [0] * len(systems)
    if batching.max_edges is not None:
        if batching.edge_cutoff is not None:
            cutoff, cap = batching.edge_cutoff, None
        else:
            graph = teacher.graph_cutoff()
            if graph is None:
                raise ConfigError(
                    f"batch max_edges needs batch edge_cutoff: teacher {teacher.identity.name} does not say its cutoff"
                )
            cutoff, cap = graph.cutoff, graph.max_neighbors
        edges = [count_edges(atoms, cutoff, cap) for atoms in systems]
    max_atoms = batching.max_atoms
    if max_atoms == AUTO:
        max_atoms = None
        if systems:

            def forward_pass(atoms: Atoms, copies: int):
                batch = _collate([_atomic_data(atoms, dtype)] * copies, device)
                positions = torch.tensor(atoms.positions, dtype=torch.float64, device=device).repeat(copies, 1)
                return lambda: teacher.predict(_with_positions(batch, positions, dtype))

            calibration = calibrate(systems, teacher, forward_pass, device, batching.memory_fraction,
                                    key=(str(device), dtype))
            max_atoms = calibration.max_atoms
            stats.memory_max_atoms = calibration.memory_max_atoms
            stats.atoms_per_s = dict(calibration.atoms_per_s)
            stats.calibration_seconds = calibration.seconds
    stats.max_atoms = max_atoms
    costs = [SystemCost(len(atoms), e) for atoms, e in zip(systems, edges)]
    return InFlightBatcher(costs, max_atoms, batching.max_edges, batching.max_systems)
