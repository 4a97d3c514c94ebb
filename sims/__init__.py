"""The network simulator: many real NetNodes on a seeded, simulated network in virtual time.

from sims import SimConfig, run
report = run(SimConfig(seed=7, nodes=20, agents=40, hours=2, loss=0.01))
"""

from .config import Partition, SimConfig
from .sim import run

__all__ = ["SimConfig", "Partition", "run"]
