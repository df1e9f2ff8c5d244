"""Names of the fields of an :class:`~molnet.data.AtomicGraph` and of the targets.

Keep every string key here so that the data, the models and the training loop agree.
"""

from __future__ import annotations

# Geometry and graph fields ---------------------------------------------------
POSITIONS = "positions"  # [n_nodes, 3] Å
ATOMIC_NUMBERS = "atomic_numbers"  # [n_nodes] int64
EDGE_INDEX = "edge_index"  # [2, n_edges] (sender j, receiver i)
SHIFTS = "shifts"  # [n_edges, 3] Å, r_ij = r_j - r_i + shift
UNIT_SHIFTS = "unit_shifts"  # [n_edges, 3] integer lattice translations, shift = unit_shift @ cell
CELL = "cell"  # [1, 3, 3] Å, rows are lattice vectors
PBC = "pbc"  # [1, 3] bool
BATCH = "batch"  # [n_nodes] graph index of each node (added by torch_geometric)
TOTAL_CHARGE = "total_charge"  # [1] e, from atoms.info[CHARGE_INFO] (default 0)
CHARGE_INFO = "charge"  # the atoms.info key of a structure's total charge

# Targets ---------------------------------------------------------------------
ENERGY = "energy"  # [1] eV
FORCES = "forces"  # [n_nodes, 3] eV/Å
STRESS = "stress"  # [1, 3, 3] eV/Å^3, ASE sign convention
WEIGHT = "weight"  # [1] per-configuration loss weight
ENERGY_WEIGHT = "energy_weight"  # [1] 0 when the configuration has no energy
FORCES_WEIGHT = "forces_weight"  # [1] 0 when the configuration has no forces
STRESS_WEIGHT = "stress_weight"  # [1] 0 when the configuration has no stress
REF_DIPOLE_FIELD = "dipole_ref"  # [1, 3] e·Å reference dipole
DIPOLE_WEIGHT = "dipole_weight"  # [1] 0 when the configuration has no dipole
REF_CHARGES_FIELD = "charges_ref"  # [n_nodes] e reference atomic charges
CHARGES_WEIGHT = "charges_weight"  # [1] 0 when the configuration has no charges

# Where read_dataset stores parsed reference values on ase.Atoms ---------------
REF_ENERGY = "REF_energy"
REF_FORCES = "REF_forces"
REF_STRESS = "REF_stress"
REF_WEIGHT = "REF_weight"
REF_DIPOLE = "REF_dipole"
REF_CHARGES = "REF_charges"
CONFIG_TYPE = "config_type"
ISOLATED_ATOM = "isolated_atom"
ISOLATED_ATOM_TYPES = (ISOLATED_ATOM, "IsolatedAtom")  # molnet's and mace-torch's config_type

# Model outputs -----------------------------------------------------------------
NODE_ENERGY = "node_energy"  # [n_nodes] eV
CHARGES = "charges"  # [n_nodes] e, models with a Coulomb block
DIPOLE = "dipole"  # [n_graphs, 3] e·Å = Σ q_i r_i, molecules with a Coulomb block
