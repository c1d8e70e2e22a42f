"""Vehicle simulator: physics, driver personas, scenarios and faults over the project DBCs.

`Simulation(driver, scenario, seed, duration, faults=[...]).frames()` yields python-can frames of all four
buses in timestamp order; see docs/simulator.md.
"""

from sim.faults import KINDS as FAULT_KINDS
from sim.faults import Fault, parse_fault
from sim.personas import PERSONAS, Persona, find_persona
from sim.scenarios import SCENARIOS, Scenario, find_scenario
from sim.vehicle import DEFAULT_EPOCH, Simulation

__all__ = [
    "DEFAULT_EPOCH",
    "FAULT_KINDS",
    "PERSONAS",
    "SCENARIOS",
    "Fault",
    "Persona",
    "Scenario",
    "Simulation",
    "find_persona",
    "find_scenario",
    "parse_fault",
]
