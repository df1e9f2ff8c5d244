"""Clifford-algebra layers and the CSMPN family (simplicial message passing on multivectors)."""

from molnet.nn.clifford.algebra import CliffordAlgebra
from molnet.nn.clifford.csmpn import CSMPN, CSMPNConfig

__all__ = ["CSMPN", "CSMPNConfig", "CliffordAlgebra"]
