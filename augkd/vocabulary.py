"""The names a user types, listed once: teacher specs and KD losses (the CLI's help and the errors quote them).

A module with no imports, so that ``augkd --help`` stays instant.
"""

#: every form of teacher spec that ``augkd.teachers.TeacherSpec`` resolves
TEACHER_SPECS = (
    "chgnet[:version] (default, 0.3.0)",
    "sevennet[:model] (7net-0)",
    "emt",
    "ase:<module>.<Class> (kwargs via --teacher-kwargs)",
    "ckpt:<augkd checkpoint .pt>",
    "fairchem:<checkpoint path> (kwarg task_name, default oc20)",
)

#: KD losses by name, with the features they compare (shared spec, algorithms.md)
KD_LOSSES = {
    "vanilla1": "student vs teacher energy and forces",
    "vanilla2": "per-atom energies",
    "n2n": "node features",
    "e2n": "teacher edge features summed onto nodes vs student node features",
    "v2v": "vector features",
    "e2e": "edge features on shared edges (GemNet-OC)",
}
KD_LOSS_NAMES = tuple(KD_LOSSES)


def teacher_help(prefix: str = "") -> str:
    """``--teacher`` help text: ``prefix`` then every spec form."""
    return prefix + "; ".join(TEACHER_SPECS)


def kd_help() -> str:
    return ("KD losses as name:lambda pairs (lambda a number or auto), e.g. n2n:100,vanilla1:1; losses: "
            + ", ".join(f"{name} ({what})" for name, what in KD_LOSSES.items()))
