"""fleetlearn: a fleet learning service for robot arms.

Packages: proto stubs in `fleet.v1`, wire conversion in `core.wire`, the command line in
`fleetlearn.cli`; the domain code lives in `policy`, `sim`, `robot_client` and `learner`.
"""

__version__ = "0.1.0"
